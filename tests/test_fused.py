"""Fused training (residuals.nets.fused, residuals.train.fused): each member of a fused model
gets the training it would get alone.

Tolerance. A grouped convolution, a batched linear head and the vectorised SGD
add the same numbers in another order than the one-net kernels, so a fused
member's weights differ from its unfused run's by float rounding, which SGD
then amplifies (chaotically, with depth and steps). The reference is the
unfused run in NCHW, the fused run in NCHW too (the CPU's grouped kernels then
add in the one-net kernels' order); the yardstick of "float rounding" is the
distance between that run and the same unfused run in NHWC (other kernels, the
same arithmetic). The fused member must stay within that yardstick, and within
``MAX_DRIFT[steps]`` in relative L2 norm of its whole state; fused and unfused
in NHWC (where the grouped kernels round differently) within twice it. Measured on digits, 1-thread fp32: the
fused drift is 2e-11 to 1e-8 after one step and 5e-9 to 1e-4 after three,
the yardstick 4e-8 to 2e-5 and 4e-7 to 2e-3; a learning rate 1% off moves a
member by 2e-7 to 7e-5 after one step, another data seed by 1e-2.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from train_helpers import same_weights, stop_after, untimed

from residuals.nets import cifar_resnet
from residuals.nets.fused import FusedResNet, FusionError
from residuals.train import TrainConfig, TrainError, load_checkpoint, train
from residuals.train.fused import fuse_groups, train_fused, train_many

MAX_DRIFT = {1: 1e-6, 3: 1e-3}  # by steps taken


def nets(depth: int, skips: tuple[bool, ...]) -> list:
    out = []
    for i, skip in enumerate(skips):
        torch.manual_seed(100 + i)
        out.append(cifar_resnet(depth, skip=skip, in_channels=1))
    return out


def subset(data, n_train: int):
    return dataclasses.replace(
        data,
        train_x=data.train_x[:n_train],
        train_y=data.train_y[:n_train],
        test_x=data.test_x[:300],
        test_y=data.test_y[:300],
    )


def distance(a, b) -> float:
    """Relative L2 distance of two models' floating-point state (weights and BN statistics)."""
    sa, sb = a.state_dict(), b.state_dict()
    keys = [k for k in sa if sa[k].is_floating_point()]
    num = sum(float(((sa[k].double() - sb[k].double()) ** 2).sum()) for k in keys)
    den = sum(float((sb[k].double() ** 2).sum()) for k in keys)
    return math.sqrt(num / den)


def mixed_configs(epochs: int) -> list[TrainConfig]:
    """Two members that differ in everything a member may: seed, lr, schedule, warm-up,
    weight decay, momentum, augmentation."""
    base = TrainConfig(epochs=epochs, amp=False, replicas=1, batch_size=128, warmup="none")
    return [
        dataclasses.replace(base, seed=0, warmup="linear", warmup_epochs=0.5, augment=True),
        dataclasses.replace(
            base,
            seed=1,
            lr=0.05,
            schedule="step",
            warmup="paper",
            weight_decay=5e-4,
            momentum=0.8,
            augment=False,
        ),
    ]


def test_fused_forward_and_backward_match_members():
    members = nets(8, (True, False, True))
    fused = FusedResNet(members)
    x = torch.randn(3, 5, 1, 8, 8)
    y = torch.randint(0, 10, (3, 5))
    logits = fused(x)
    assert logits.shape == (3, 5, 10)
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").backward()
    for k, m in enumerate(members):
        assert torch.equal(logits[k], m(x[k]))  # NCHW grouped conv: the same sums, bitwise here
        torch.nn.functional.cross_entropy(m(x[k]), y[k], reduction="sum").backward()
        for (name, p), (fname, fp) in zip(m.named_parameters(), fused.named_parameters()):
            assert name == fname
            torch.testing.assert_close(fp.grad[k], p.grad, rtol=1e-5, atol=1e-6)
    shared = fused(x[0])  # one batch for every member
    assert torch.equal(shared[0], logits[0])


@pytest.mark.parametrize("options", [{"activation": "elu"}, {"head": "conv"}, {"block": "preact"}])
def test_fused_forward_of_other_blocks_activations_and_heads(options):
    from residuals.nets.models import ResNet, ResNetConfig

    members = []
    for skip in (True, False):
        torch.manual_seed(int(skip))
        cfg = ResNetConfig(
            stage_blocks=(1, 1), widths=(8, 16), stem_width=8, skip=skip, in_channels=1, **options
        )
        members.append(ResNet(cfg).eval())
    fused = FusedResNet(members).eval()
    x = torch.randn(2, 4, 1, 8, 8)
    out = fused(x)
    for k, m in enumerate(members):
        torch.testing.assert_close(out[k], m(x[k]), rtol=1e-5, atol=1e-6)


def test_member_state_round_trip_and_errors():
    members = nets(8, (True, False))
    fused = FusedResNet(members)
    assert same_weights(fused.member(1), members[1])
    assert not fused.member(1).skip and fused.member(0).skip
    fused.load_member_state_dict(0, members[1].state_dict())
    assert same_weights(fused.member(0), members[1])
    with pytest.raises(FusionError, match="architectures differ"):
        FusedResNet([cifar_resnet(8, in_channels=1), cifar_resnet(14, in_channels=1)])
    with pytest.raises(FusionError, match="option-A"):
        FusedResNet([cifar_resnet(8, shortcut="B"), cifar_resnet(8, shortcut="B", skip=False)])
    with pytest.raises(ValueError, match="expects images"):
        fused(torch.zeros(3, 4, 1, 8, 8))


@pytest.mark.parametrize("depth", [8, 20])
@pytest.mark.parametrize("steps", [1, 3])
def test_fused_run_equals_unfused_runs(digits, one_thread, depth, steps):
    data = subset(digits, 128 * steps)
    cfgs = [dataclasses.replace(c, channels_last=False) for c in mixed_configs(epochs=1)]
    fused_models, nchw, nhwc, fused_nhwc = (nets(depth, (True, False)) for _ in range(4))
    fused = train_fused(fused_models, data, cfgs)
    train_fused(fused_nhwc, data, [dataclasses.replace(c, channels_last=True) for c in cfgs])
    for k, cfg in enumerate(cfgs):
        alone = train(nchw[k], data, cfg)
        other = train(nhwc[k], data, dataclasses.replace(cfg, channels_last=True))
        rounding = distance(nhwc[k], nchw[k])
        drift = distance(fused_models[k], nchw[k])
        assert drift <= max(rounding, 1e-9) and drift < MAX_DRIFT[steps], (drift, rounding)
        # in NHWC the grouped kernels round like the layout change itself
        assert distance(fused_nhwc[k], nhwc[k]) <= 2 * rounding + 1e-9
        (a,), (b,), (c,) = untimed(fused[k].history), untimed(alone.history), untimed(other.history)
        assert a["epoch"] == b["epoch"] and a["lr"] == pytest.approx(b["lr"], rel=1e-6)
        for key in ("train_loss", "test_loss"):
            assert abs(a[key] - b[key]) <= max(abs(c[key] - b[key]), 1e-5), key
        assert fused[k].iterations == alone.iterations == steps and not fused[k].diverged


def test_paper_warmup_switches_per_member(digits, one_thread):
    data = subset(digits, 512)
    cfgs = [dataclasses.replace(c, epochs=3) for c in mixed_configs(1)]
    cfgs[1] = dataclasses.replace(cfgs[1], lr=0.1)
    fused = train_fused(nets(8, (True, True)), data, cfgs)
    alone = train(nets(8, (True, True))[1], data, cfgs[1])
    assert fused[0].warmup_end_iteration is None
    assert fused[1].warmup_end_iteration == alone.warmup_end_iteration is not None
    assert [r.lr for r in fused[1].history] == pytest.approx(
        [r.lr for r in alone.history], rel=1e-6
    )


def test_a_diverged_member_is_frozen_and_the_others_go_on(digits, one_thread, tmp_path):
    data = subset(digits, 384)
    good = TrainConfig(epochs=3, amp=False, replicas=1, warmup="none", seed=0)
    bad = dataclasses.replace(good, lr=1e6, seed=1)
    paths = [tmp_path / "good.pt", tmp_path / "bad.pt"]
    fused_models = nets(8, (True, False))
    results = train_fused(fused_models, data, [good, bad], checkpoint_paths=paths)
    bad_alone = train(nets(8, (True, False))[1], data, bad)
    assert bad_alone.diverged and results[1].diverged
    assert len(results[1].history) == len(bad_alone.history) < 3
    assert not math.isfinite(results[1].history[-1].train_loss)
    assert not results[0].diverged and len(results[0].history) == 3
    alone = nets(8, (True,))[0]
    train(alone, data, good)
    assert distance(fused_models[0], alone) < MAX_DRIFT[3] * 10  # 9 steps
    state = load_checkpoint(paths[1])
    assert state["diverged"] and state["finished"]
    assert len(state["history"]) == len(bad_alone.history)
    assert load_checkpoint(paths[0])["finished"]


def test_interrupted_fused_run_resumes_exactly(digits, one_thread, tmp_path):
    data = subset(digits, 384)
    cfgs = [dataclasses.replace(c, epochs=3) for c in mixed_configs(1)]
    paths = [tmp_path / "a.pt", tmp_path / "b.pt"]
    straight = nets(8, (True, False))
    full = train_fused(straight, data, cfgs)
    resumed = nets(8, (True, False))
    with pytest.raises(KeyboardInterrupt):
        train_fused(
            resumed,
            data,
            cfgs,
            checkpoint_paths=paths,
            on_epoch=lambda k, r: stop_after(2)(r) if k == 1 else None,
        )
    assert [len(load_checkpoint(p)["history"]) for p in paths] == [2, 2]
    again = train_fused(nets(8, (True, False)), data, cfgs, checkpoint_paths=paths, resume=True)
    for k in range(2):
        assert untimed(again[k].history) == untimed(full[k].history)  # bitwise, on the CPU
        assert again[k].resumed_from_epoch == 2
        assert same_weights(again[k].model, straight[k])


def test_fused_checkpoint_resumes_unfused(digits, one_thread, tmp_path):
    data = subset(digits, 384)
    cfgs = [dataclasses.replace(c, epochs=3) for c in mixed_configs(1)]
    paths = [tmp_path / "a.pt", tmp_path / "b.pt"]
    with pytest.raises(KeyboardInterrupt):
        train_fused(
            nets(8, (True, False)),
            data,
            cfgs,
            checkpoint_paths=paths,
            on_epoch=lambda k, r: stop_after(1)(r) if k == 1 else None,
        )
    model = nets(8, (True, False))[1]
    result = train(model, data, cfgs[1], checkpoint_path=paths[1], resume=True)
    reference = nets(8, (True, False))[1]
    train(reference, data, cfgs[1])
    assert result.resumed_from_epoch == 1 and len(result.history) == 3
    assert distance(model, reference) < MAX_DRIFT[3] * 10  # 9 steps


def test_train_many_groups_and_falls_back(digits, one_thread):
    data = subset(digits, 256)
    models = nets(8, (True, False)) + [cifar_resnet(14, in_channels=1)]
    cfgs = [TrainConfig(epochs=1, amp=False, replicas=1, warmup="none", seed=s) for s in range(3)]
    assert fuse_groups(models, cfgs) == [[0, 1], [2]]
    assert fuse_groups(models, cfgs, max_members=1) == [[0], [1], [2]]
    other = cfgs[:1] + [dataclasses.replace(cfgs[1], batch_size=64)] + cfgs[2:]
    assert fuse_groups(models, other) == [[0], [1], [2]]
    seen = []
    results = train_many(models, data, cfgs, fuse=True, on_epoch=lambda i, r: seen.append(i))
    assert sorted(seen) == [0, 1, 2] and all(r.model is m for r, m in zip(results, models))
    with pytest.raises(ValueError, match="as many configs"):
        train_many(models, data, cfgs[:2])


def test_fused_config_errors(digits):
    models = nets(8, (True, False))
    base = TrainConfig(epochs=1, amp=False, warmup="none")
    with pytest.raises(TrainError, match="share TrainConfig.batch_size"):
        train_fused(models, digits, [base, dataclasses.replace(base, batch_size=64)])
    with pytest.raises(TrainError, match="replicas"):
        train_fused(models, digits, [dataclasses.replace(base, replicas=2)] * 2)
    with pytest.raises(TrainError, match="cannot be fused"):
        train_fused([models[0], cifar_resnet(14, in_channels=1)], digits, [base] * 2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fused_cuda_graph_run_matches_unfused_runs(digits):
    """fp32 on the GPU, batch 64 (a partial last batch: replayed and eager steps interleave):
    each member trains like its own unfused run, to cuDNN's float rounding, and the step is
    captured without falling back (no warning) or waiting for the device in every step."""
    import warnings

    data = digits.to("cuda")
    cfgs = [
        TrainConfig(
            epochs=2,
            batch_size=64,
            lr=0.05,
            warmup=w,
            warmup_epochs=1,
            seed=s,
            device="cuda",
            amp=False,
            augment=True,
        )
        for s, w in enumerate(("linear", "paper"))
    ]
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fused = train_fused(nets(8, (True, False)), data, cfgs)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "CUDA graph failed" in m], messages
    assert len([m for m in messages if "synchroniz" in m]) <= 2 * 30, messages[:5]
    for k, cfg in enumerate(cfgs):
        alone = train(nets(8, (True, False))[k], data, cfg)
        for a, b in zip(alone.history, fused[k].history):
            assert b.lr == pytest.approx(a.lr, rel=1e-6)
            assert b.train_loss == pytest.approx(a.train_loss, rel=2e-2, abs=1e-3)
            assert b.test_error == pytest.approx(a.test_error, abs=0.03)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fused_cuda_bf16_trains_every_member(digits, tmp_path):
    data = digits.to("cuda")
    cfgs = [
        TrainConfig(epochs=3, lr=0.05, warmup_epochs=1, seed=s, device="cuda") for s in range(4)
    ]
    paths = [tmp_path / f"m{s}.pt" for s in range(4)]
    results = train_many(nets(20, (True, False, True, False)), data, cfgs, checkpoint_paths=paths)
    for r in results:
        assert r.amp and not r.diverged and r.history[-1].train_loss < r.history[0].train_loss
    assert all(load_checkpoint(p)["finished"] for p in paths)
