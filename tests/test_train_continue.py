"""The trainer's optimisers, constant schedule, per-step records, mid-epoch checkpoints and
resumes that ask for more epochs (small models on the embedded digits, one thread)."""

from __future__ import annotations

import math

import pytest
import torch
from train_helpers import same_weights, small_cnn, untimed

from residuals.train import (
    LRSchedule,
    StepTrace,
    TrainConfig,
    TrainError,
    load_checkpoint,
    make_optimizer,
    save_checkpoint,
    steps_per_epoch,
    train,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_constant_schedule_keeps_the_rate_after_the_warmup():
    cfg = TrainConfig(epochs=3, lr=0.05, schedule="constant", warmup="linear", warmup_epochs=1)
    s = LRSchedule(cfg, steps_per_epoch=10)
    assert [round(s.at(i), 6) for i in range(3)] == [0.005, 0.01, 0.015]
    assert {s.at(i) for i in range(10, 30)} == {0.05}
    assert {
        LRSchedule(TrainConfig(schedule="constant", warmup="none"), 7).at(i) for i in range(84)
    } == {0.1}


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_each_optimizer_trains(digits, name):
    cfg = TrainConfig(
        epochs=4,
        batch_size=64,
        optimizer=name,
        lr=0.05 if name == "sgd" else 3e-3,
        schedule="constant",
        warmup="none",
        weight_decay=1e-4,
    )
    r = train(small_cnn(), digits, cfg)
    assert r.history[-1].train_loss < 0.9 * r.history[0].train_loss
    assert all(math.isfinite(h.test_error) for h in r.history)


def test_optimizer_options_mean_what_the_docs_say():
    params = [torch.nn.Parameter(torch.ones(3))]
    adam = make_optimizer(params, "adam", lr=1e-3, momentum=0.8, weight_decay=0.0, cuda=False)
    assert isinstance(adam, torch.optim.Adam) and adam.defaults["betas"] == (0.8, 0.999)
    adamw = make_optimizer(params, "adamw", lr=1e-3, momentum=0.9, weight_decay=0.1, cuda=False)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["weight_decay"] == 0.1
    # AdamW's decay is decoupled: with a zero gradient the weights still shrink by lr * wd
    params[0].grad = torch.zeros(3)
    adamw.step()
    torch.testing.assert_close(params[0].detach(), torch.full((3,), 1 - 1e-3 * 0.1))
    with pytest.raises(ValueError, match="optimizer must be one of sgd, adam, adamw"):
        make_optimizer(params, "lbfgs", lr=1, momentum=0, weight_decay=0, cuda=False)
    with pytest.raises(ValueError, match="TrainConfig.optimizer must be one of"):
        TrainConfig(optimizer="lbfgs")


def test_step_trace_adds_up_to_the_epoch(digits):
    traces: list[StepTrace] = []
    cfg = TrainConfig(epochs=2, batch_size=100, lr=0.05, warmup_epochs=1)  # 13 full + one of 47
    r = train(small_cnn(), digits, cfg, on_steps=traces.append)
    spe = steps_per_epoch(len(digits.train_y), 100)
    assert [t.epoch for t in traces] == [1, 2]
    assert traces[1].iteration == list(range(spe, 2 * spe))
    sizes = [100] * (spe - 1) + [len(digits.train_y) - 100 * (spe - 1)]
    for t, h in zip(traces, r.history):
        mean = sum(loss * n for loss, n in zip(t.loss, sizes)) / sum(sizes)
        assert mean == pytest.approx(h.train_loss, rel=1e-9)
        err = sum(e * n for e, n in zip(t.error, sizes)) / sum(sizes)
        assert err == pytest.approx(h.train_error, abs=1e-12)
        assert t.lr[-1] == pytest.approx(h.lr)
    sched = LRSchedule(cfg, spe)
    assert traces[0].lr == pytest.approx([sched.at(i) for i in range(spe)])


def test_on_step_sees_every_step_without_reading_the_device(digits):
    seen = []
    cfg = TrainConfig(epochs=1, batch_size=128, lr=0.05, warmup="none")
    train(
        small_cnn(),
        digits,
        cfg,
        on_step=lambda p: seen.append((p.epoch, p.step, p.seen)),
    )
    spe = steps_per_epoch(len(digits.train_y), 128)
    assert [s for _, s, _ in seen] == list(range(spe)) and seen[-1][2] == len(digits.train_y)


def test_more_epochs_on_resume_continue_the_run(digits, tmp_path):
    """A constant schedule does not depend on the total: 2 epochs + 2 more == 4 straight."""
    cfg = TrainConfig(epochs=4, lr=0.05, schedule="constant", warmup="none", augment=True, seed=3)
    straight = train(small_cnn(), digits, cfg)
    path = tmp_path / "run.pt"
    short = train(
        small_cnn(),
        digits,
        TrainConfig(**{**cfg.__dict__, "epochs": 2}),
        checkpoint_path=path,
    )
    assert load_checkpoint(path)["finished"]
    longer = train(small_cnn(seed=7), digits, cfg, checkpoint_path=path, resume=True)
    assert longer.resumed_from_epoch == 2 and len(longer.history) == 4
    assert untimed(longer.history) == untimed(straight.history)
    assert same_weights(longer.model, straight.model)
    spe = steps_per_epoch(len(digits.train_y), 128)
    assert longer.plans == [
        {"from_epoch": 0, "from_iteration": 0, "epochs": 2},
        {"from_epoch": 2, "from_iteration": 2 * spe, "epochs": 4},
    ]
    assert load_checkpoint(path)["plans"] == longer.plans
    assert untimed(short.history) == untimed(straight.history[:2])


def test_more_epochs_replan_the_cosine_over_the_new_total(digits, tmp_path):
    path = tmp_path / "run.pt"
    cfg2 = TrainConfig(epochs=2, lr=0.05, warmup="none")
    traces: list[StepTrace] = []
    train(small_cnn(), digits, cfg2, checkpoint_path=path)
    cfg5 = TrainConfig(epochs=5, lr=0.05, warmup="none")
    r = train(
        small_cnn(),
        digits,
        cfg5,
        checkpoint_path=path,
        resume=True,
        on_steps=traces.append,
    )
    spe = steps_per_epoch(len(digits.train_y), 128)
    new = LRSchedule(cfg5, spe)
    assert traces[0].iteration[0] == 2 * spe
    assert traces[0].lr == pytest.approx([new.at(i) for i in range(2 * spe, 3 * spe)])
    assert r.history[-1].lr == pytest.approx(new.at(5 * spe - 1))
    assert len(r.plans) == 2


def test_resume_refuses_other_changes_and_fewer_epochs_listing_each(digits, tmp_path):
    path = tmp_path / "run.pt"
    train(
        small_cnn(),
        digits,
        TrainConfig(epochs=3, lr=0.05, warmup="none"),
        checkpoint_path=path,
    )
    with pytest.raises(TrainError) as e:
        train(
            small_cnn(),
            digits,
            TrainConfig(epochs=4, lr=0.1, warmup="none", optimizer="adam"),
            checkpoint_path=path,
            resume=True,
        )
    msg = str(e.value)
    assert "lr: 0.05 in the checkpoint, 0.1 now" in msg
    assert "optimizer: 'sgd' in the checkpoint, 'adam' now" in msg and "epochs:" not in msg
    with pytest.raises(TrainError, match="epochs: 2 asked for, but the checkpoint has trained 3"):
        train(
            small_cnn(),
            digits,
            TrainConfig(epochs=2, lr=0.05, warmup="none"),
            checkpoint_path=path,
            resume=True,
        )


def test_a_checkpoint_from_before_a_setting_existed_resumes_with_its_default(digits, tmp_path):
    """Settings added to TrainConfig after a checkpoint was written read as their defaults:
    resuming it with the default goes on; with another value it is refused by name."""
    path = tmp_path / "run.pt"
    cfg = TrainConfig(epochs=1, lr=0.05, warmup="none")
    train(small_cnn(), digits, cfg, checkpoint_path=path)
    state = load_checkpoint(path)
    for name in ("optimizer", "sync_bn"):  # as an older version of residuals wrote it
        del state["config"][name]
    save_checkpoint(state, path)
    more = TrainConfig(epochs=2, lr=0.05, warmup="none")
    r = train(small_cnn(), digits, more, checkpoint_path=path, resume=True)
    assert r.resumed_from_epoch == 1 and len(r.history) == 2
    save_checkpoint(state, path)
    with pytest.raises(TrainError, match="optimizer: 'sgd' in the checkpoint, 'adam' now"):
        train(
            small_cnn(),
            digits,
            TrainConfig(epochs=2, lr=0.05, warmup="none", optimizer="adam"),
            checkpoint_path=path,
            resume=True,
        )


@pytest.mark.parametrize("stop_at", [7, 17])  # within epoch 1; within epoch 2
def test_mid_epoch_checkpoints_resume_bit_for_bit(digits, tmp_path, stop_at):
    cfg = TrainConfig(epochs=2, batch_size=128, lr=0.05, warmup_epochs=1, augment=True, seed=2)
    traces_full: list[StepTrace] = []
    full = train(small_cnn(), digits, cfg, on_steps=traces_full.append)
    path = tmp_path / "run.pt"

    def interrupt(p):
        if p.epoch * 11 + p.step + 1 == stop_at:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(
            small_cnn(),
            digits,
            cfg,
            checkpoint_path=path,
            checkpoint_every=3,
            on_step=interrupt,
        )
    state = load_checkpoint(path)
    last_saved = (stop_at - 1) // 3 * 3  # the step interrupted is not saved; the one before is
    assert state["partial"]["epoch"] * 11 + state["partial"]["step"] == last_saved
    torch.manual_seed(321)
    traces: list[StepTrace] = []
    resumed = train(
        small_cnn(seed=4),
        digits,
        cfg,
        checkpoint_path=path,
        resume=True,
        on_steps=traces.append,
    )
    assert untimed(resumed.history) == untimed(full.history)
    assert same_weights(resumed.model, full.model)
    assert traces[-1].loss == traces_full[-1].loss  # the steps before the resume come back too
    assert load_checkpoint(path)["partial"] is None


def test_checkpoint_every_needs_a_path(digits):
    with pytest.raises(TrainError, match="checkpoint_every"):
        train(
            small_cnn(),
            digits,
            TrainConfig(epochs=1, warmup="none"),
            checkpoint_every=5,
        )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_cuda_graph_adam_trains_like_the_eager_loop(digits, name):
    """Fused Adam reads the schedule's device lr inside the captured step; the capture must
    succeed (a failed one warns) and replay the eager step's work."""
    import warnings

    runs = {}
    for graph in (False, True):
        cfg = TrainConfig(
            epochs=3,
            batch_size=64,
            optimizer=name,
            lr=3e-3,
            warmup_epochs=1,
            device="cuda",
            cuda_graph=graph,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            runs[graph] = train(small_cnn(), digits.to("cuda"), cfg, on_steps=lambda t: None)
    for a, b in zip(runs[False].history, runs[True].history):
        assert b.lr == pytest.approx(a.lr, rel=1e-6)
        assert b.train_loss == pytest.approx(a.train_loss, rel=2e-2, abs=1e-3)
    assert runs[True].history[-1].train_loss < runs[True].history[0].train_loss
