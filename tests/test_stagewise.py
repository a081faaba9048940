"""A ResNet trained block by block like a booster (residuals.train.stagewise)."""

import pytest
import torch

from residuals.data import load_dataset, normalize
from residuals.nets import cifar_resnet
from residuals.train import TrainConfig
from residuals.train.stagewise import StageModel, check_stagewise, train_stagewise, zero_branch


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("digits")
    data.train_x, data.train_y = data.train_x[:256], data.train_y[:256]
    data.test_x, data.test_y = data.test_x[:128], data.test_y[:128]
    return data


def _cfg(**kw):
    base = {
        "epochs": 1,
        "batch_size": 64,
        "lr": 0.1,
        "warmup": "none",
        "warmup_epochs": 0.0,
        "amp": False,
        "replicas": 1,
        "seed": 0,
    }
    return TrainConfig(**{**base, **kw})


def test_stage_model_trains_one_block_and_the_head_and_bypasses_later_blocks():
    torch.manual_seed(0)
    net = cifar_resnet(14, in_channels=1)
    stage = StageModel(net, 2)
    trained = {n for n, p in stage.named_parameters() if p.requires_grad}
    assert trained and all(n.startswith(("net.blocks.2.", "net.head.")) for n in trained)
    assert any(n.startswith("net.head.") for n in trained)
    stage.train()
    assert net.blocks[2].training and not net.blocks[1].training and not net.stem.training
    x = torch.randn(4, 1, 8, 8)
    stage.eval()
    with torch.no_grad():
        expected = net.head(net.final_state(x, drop=range(3, 6)))
        torch.testing.assert_close(stage(x), expected)
    # stage 0 also trains the stem
    assert any(
        n.startswith("net.stem.")
        for n, p in StageModel(net, 0).named_parameters()
        if p.requires_grad
    )
    with pytest.raises(ValueError, match="stage 6 is not a block"):
        StageModel(net, 6)


def test_stagewise_needs_identity_paths_and_parameter_free_shortcuts():
    with pytest.raises(ValueError, match="identity paths"):
        check_stagewise(cifar_resnet(14, skip=False))
    with pytest.raises(ValueError, match="option B"):
        check_stagewise(cifar_resnet(14, shortcut="B"))


def test_each_stage_starts_from_the_model_so_far_and_keeps_earlier_blocks(digits, tmp_path):
    torch.manual_seed(0)
    net = cifar_resnet(14, in_channels=1, num_classes=10)
    seen = []
    snapshots = []

    def on_stage(record):
        seen.append(record)
        snapshots.append({k: v.clone() for k, v in net.state_dict().items()})

    result = train_stagewise(net, digits, _cfg(), checkpoint_dir=tmp_path, on_stage=on_stage)
    assert [r.stage for r in result.stages] == list(range(6)) == [r.stage for r in seen]
    assert not result.diverged and result.seconds > 0
    # stage m changes block m and the head only; the stem is fixed after stage 0
    for m in range(1, 6):
        before, after = snapshots[m - 1], snapshots[m]
        for key in before:
            changed = not torch.equal(before[key], after[key])
            mine = key.startswith((f"blocks.{m}.", "head."))
            if changed:
                assert mine, f"stage {m} changed {key}"
    # the recorded test error is the truncated model's: the last stage's is the whole net's
    net.eval().float()
    x = normalize(digits.test_x, digits.mean, digits.std)
    err = (next(net.lesion_predictions(x, [()])) != digits.test_y).float().mean().item()
    assert err == pytest.approx(result.stages[-1].test_error, abs=1e-6)
    # only the last finished stage's checkpoint is kept, with the records
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage005.pt", "stages.json"]


def test_a_new_block_starts_as_the_identity(digits):
    torch.manual_seed(0)
    net = cifar_resnet(14, in_channels=1, num_classes=10)
    train_stagewise(net, digits, _cfg())
    net.eval()
    x = normalize(digits.test_x[:16], digits.mean, digits.std)
    with torch.no_grad():
        before = StageModel(net, 2)(x)
        zero_branch(net.blocks[3])
        torch.testing.assert_close(StageModel(net, 3).eval()(x), before)


def test_resume_continues_from_the_stage_checkpoints(digits, tmp_path):
    torch.manual_seed(0)
    full = train_stagewise(
        cifar_resnet(8, in_channels=1, num_classes=10),
        digits,
        _cfg(epochs=2),
        checkpoint_dir=tmp_path / "a",
    ).model

    class Stop(Exception):
        pass

    def stop_after_first(record):
        raise Stop

    torch.manual_seed(0)
    net = cifar_resnet(8, in_channels=1, num_classes=10)
    with pytest.raises(Stop):
        train_stagewise(
            net, digits, _cfg(epochs=2), checkpoint_dir=tmp_path / "b", on_stage=stop_after_first
        )
    torch.manual_seed(123)  # a different init: everything must come from the checkpoints
    resumed = train_stagewise(
        cifar_resnet(8, in_channels=1, num_classes=10),
        digits,
        _cfg(epochs=2),
        checkpoint_dir=tmp_path / "b",
    )
    assert [r.stage for r in resumed.stages] == [0, 1, 2]
    for (k, a), b in zip(full.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)
