"""The trainer: config validation, per-iteration schedules (incl. the paper's warm-up),
determinism, atomic checkpoints and exact resume, divergence, interrupts, errors.

Small models on the embedded digits; the whole file runs in well under a minute on 2 cores.
"""

from __future__ import annotations

import math
from dataclasses import asdict

import pytest
import torch
from torch import nn
from train_helpers import host_reads, same_weights, small_cnn, stop_after, untimed

import residuals.device as rdevice
from residuals.data import load_dataset
from residuals.train import (
    EpochRecord,
    LRSchedule,
    TrainConfig,
    TrainError,
    evaluate,
    load_checkpoint,
    steps_per_epoch,
    train,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def linear_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"epochs": 0}, "epochs"),
        ({"epochs": True}, "epochs"),
        ({"lr": 0.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"momentum": 1.0}, "momentum"),
        ({"weight_decay": -1e-4}, "weight_decay"),
        ({"schedule": "linear"}, "schedule"),
        ({"warmup": "gradual"}, "warmup"),
        ({"warmup_epochs": -1}, "warmup_epochs"),
        ({"epochs": 2, "warmup_epochs": 2}, "warmup_epochs"),
        ({"augment": "flip"}, "augment"),
        ({"eval_batch_size": 0}, "eval_batch_size"),
        ({"seed": -1}, "seed"),
        ({"amp": "yes"}, "amp"),
        ({"device": ""}, "device"),
    ],
)
def test_invalid_config_is_a_clear_value_error(kwargs, field):
    with pytest.raises(ValueError, match=rf"TrainConfig\.{field}") as e:
        TrainConfig(**kwargs)
    assert repr(next(iter(kwargs.values())))[:3] in str(e.value) or field == "warmup_epochs"


def test_valid_configs():
    TrainConfig(epochs=2, warmup="none", warmup_epochs=5)  # the length only matters for "linear"
    TrainConfig(augment="crop-flip")
    TrainConfig(lr=1e6)


def test_steps_per_epoch_keeps_partial_batches_but_not_single_images():
    assert steps_per_epoch(1347, 128) == 11
    assert steps_per_epoch(1280, 128) == 10
    assert steps_per_epoch(1281, 128) == 10  # a batch of 1 would break BatchNorm
    assert steps_per_epoch(50, 128) == 1
    with pytest.raises(TrainError, match="batch of at least 2"):
        steps_per_epoch(1, 128)


# --------------------------------------------------------------------------- schedules


def test_linear_warmup_then_cosine_per_iteration():
    cfg = TrainConfig(epochs=10, lr=0.1, warmup="linear", warmup_epochs=2)
    s = LRSchedule(cfg, steps_per_epoch=50)
    assert (s.total, s.warmup_iters) == (500, 100)
    assert s.at(0) == pytest.approx(0.1 / 100)
    assert s.at(49) == pytest.approx(0.1 * 50 / 100)
    assert s.at(99) == pytest.approx(0.1)
    assert s.at(100) == pytest.approx(0.1)  # the cosine starts at the peak
    assert s.at(300) == pytest.approx(0.05)  # halfway through the cosine
    lrs = [s.at(i) for i in range(100, 500)]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    assert 0 < s.at(499) < 1e-5  # the cosine ends near zero
    # the device table is the closed form
    torch.testing.assert_close(s.table, torch.tensor([s.at(i) for i in range(500)]))
    assert float(s.set(42)) == pytest.approx(s.at(42))
    # a warm-up that rounds to the whole run still leaves the cosine one iteration
    edge = LRSchedule(TrainConfig(epochs=2, warmup_epochs=1.999), steps_per_epoch=10)
    assert edge.warmup_iters == 19 and edge.at(19) == pytest.approx(0.1)


def test_step_schedule_drops_by_ten_at_half_and_three_quarters():
    cfg = TrainConfig(epochs=8, lr=0.1, schedule="step", warmup="none")
    s = LRSchedule(cfg, steps_per_epoch=100)  # 800 iterations: the paper's 32k/48k of 64k, scaled
    assert s.milestones == (400, 600)
    assert [s.at(i) for i in (0, 399, 400, 599, 600, 799)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    )
    warm = LRSchedule(TrainConfig(epochs=8, schedule="step", warmup_epochs=1), steps_per_epoch=100)
    assert warm.at(9) == pytest.approx(0.1 * 10 / 100) and warm.at(450) == pytest.approx(0.01)


def test_paper_warmup_switches_after_the_first_iteration_below_80_percent():
    cfg = TrainConfig(epochs=4, lr=0.1, schedule="step", warmup="paper")
    s = LRSchedule(cfg, steps_per_epoch=10)
    assert s.warmup_iters == 0
    assert s.at(0, warmed=False) == pytest.approx(0.01) and s.at(0) == pytest.approx(0.1)
    batch = 100
    wrong = torch.zeros((), dtype=torch.int64)
    # running epoch error after each step: 95%, 90%, 85%, 80% (not below), 78% -> switch
    per_step = [95, 85, 75, 65, 70, 20]
    lrs = []
    for it, w in enumerate(per_step):
        lrs.append(float(s.set(it)))
        wrong += w
        s.observe(it, wrong, (it + 1) * batch)
    assert lrs[:5] == pytest.approx([0.01] * 5)
    assert lrs[5] == pytest.approx(0.1)  # iteration 4 ended at 390/500 = 78% < 80%
    assert s.state_dict() == {"warmed": True, "switch_iteration": 5}
    # once warmed, it stays warmed even if the error rises again
    s.observe(6, torch.tensor(1000), 1000)
    assert float(s.set(6)) == pytest.approx(0.1) and float(s.set(25)) == pytest.approx(0.01)
    # state round trip
    fresh = LRSchedule(cfg, steps_per_epoch=10)
    fresh.load_state_dict(s.state_dict())
    assert float(fresh.set(3)) == pytest.approx(0.1)


def test_paper_warmup_in_training_switches_exactly_when_the_running_error_drops(digits):
    """Recompute the running error from the model's own predictions and the seeded order."""
    cfg = TrainConfig(
        epochs=2,
        batch_size=64,
        lr=0.1,
        warmup="paper",
        schedule="step",
        channels_last=False,
        seed=5,
    )
    model = linear_model()
    predictions: list[torch.Tensor] = []
    model.register_forward_hook(
        lambda m, i, out: predictions.append(out.argmax(1).clone()) if m.training else None
    )
    result = train(model, digits, cfg)
    spe = steps_per_epoch(len(digits.train_y), cfg.batch_size)
    perm = torch.randperm(len(digits.train_y), generator=torch.Generator().manual_seed(cfg.seed))
    wrong = seen = 0
    expected = None
    for it in range(spe):
        idx = perm[it * cfg.batch_size : (it + 1) * cfg.batch_size]
        wrong += int((predictions[it] != digits.train_y[idx]).sum())
        seen += len(idx)
        if wrong < 0.8 * seen:
            expected = it + 1
            break
    assert expected is not None and expected > 1  # it started above 80% and came down
    assert result.warmup_end_iteration == expected
    assert result.history[-1].lr == pytest.approx(0.1 * 0.01)  # the step schedule, warmed


# --------------------------------------------------------------------------- training


def test_training_lowers_the_loss_and_records_every_field(digits):
    seen = []
    result = train(
        small_cnn(), digits, TrainConfig(epochs=3, lr=0.05, warmup_epochs=1), on_epoch=seen.append
    )
    h = result.history
    assert [r.epoch for r in h] == [1, 2, 3] and seen == h
    assert not result.diverged and result.iterations == 33
    assert h[-1].train_loss < h[0].train_loss
    for r in h:
        assert 0 <= r.train_error <= 1 and 0 <= r.test_error <= 1
        assert r.seconds > 0 and r.images_per_s == pytest.approx(1347 / r.seconds)
        assert math.isfinite(r.test_loss)
    assert h[0].lr == pytest.approx(0.05)  # end of the 1-epoch warm-up: the peak
    assert h[-1].lr < 1e-3


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "bf16"])
def test_same_seed_same_history_bitwise(digits, amp):
    cfg = TrainConfig(epochs=2, lr=0.05, warmup_epochs=1, augment=True, seed=7, amp=amp)
    a = train(small_cnn(), digits, cfg)
    b = train(small_cnn(), digits, cfg)
    assert untimed(a.history) == untimed(b.history)
    assert same_weights(a.model, b.model)
    c = train(
        small_cnn(),
        digits,
        TrainConfig(epochs=2, lr=0.05, warmup_epochs=1, augment=True, seed=8, amp=amp),
    )
    assert untimed(c.history) != untimed(a.history)


@pytest.mark.parametrize("native", [False, True])
def test_default_precision_is_bf16_only_on_cpus_with_native_bf16(digits, monkeypatch, native):
    """amp=None trains exactly as amp=True where the CPU computes bf16 natively (and torch runs
    one thread, as here), as amp=False elsewhere."""
    monkeypatch.setattr(rdevice, "cpu_has_native_bf16", lambda: native)
    assert rdevice.resolve_amp(None, "cpu") is native
    torch.set_num_threads(2)  # oneDNN's multi-threaded bf16 backward stalls on a busy machine
    assert rdevice.resolve_amp(None, "cpu") is False
    torch.set_num_threads(1)
    assert rdevice.resolve_amp(None, "cuda") is True
    assert rdevice.resolve_amp(False, "cuda") is False and rdevice.resolve_amp(True, "cpu") is True
    cfg = TrainConfig(epochs=2, lr=0.05, warmup_epochs=1, seed=3)
    default = train(small_cnn(), digits, cfg)
    explicit = train(small_cnn(), digits, TrainConfig(**{**asdict(cfg), "amp": native}))
    assert untimed(default.history) == untimed(explicit.history)
    assert same_weights(default.model, explicit.model)


@pytest.mark.parametrize(
    "caps, expected",
    [
        ({"architecture": "x86_64", "avx512_bf16": True, "amx_bf16": False}, True),
        ({"architecture": "x86_64", "avx512_bf16": False, "amx_bf16": True}, True),
        (
            {"architecture": "x86_64", "avx512_bw": True, "avx512_bf16": False},
            False,
        ),  # emulated bf16
        ({"architecture": "aarch64", "bf16": True}, False),  # not measured: fp32
    ],
)
def test_native_bf16_is_read_from_the_cpu_capabilities(monkeypatch, caps, expected):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: caps, raising=False)
    assert rdevice.cpu_has_native_bf16.__wrapped__() is expected


def test_native_bf16_falls_back_to_proc_cpuinfo(monkeypatch, tmp_path):
    monkeypatch.delattr(torch.cpu, "get_capabilities", raising=False)
    info = tmp_path / "cpuinfo"
    monkeypatch.setattr(rdevice, "CPUINFO", info)
    info.write_text("flags\t\t: fpu sse avx512f avx512bw avx512_bf16 avx512_vnni\n")
    assert rdevice.cpu_has_native_bf16.__wrapped__() is True
    info.write_text("flags\t\t: fpu sse avx2 avx512f avx512bw\n")
    assert rdevice.cpu_has_native_bf16.__wrapped__() is False
    info.unlink()
    assert rdevice.cpu_has_native_bf16.__wrapped__() is False


def test_no_host_synchronisation_inside_the_step_loop(digits, monkeypatch):
    """Reads of tensor values from Python happen a few times per epoch, not per step."""
    reads = host_reads(monkeypatch)
    cfg = TrainConfig(epochs=2, batch_size=16, lr=0.05, warmup="paper", augment=True)
    r = train(linear_model(), digits, cfg)
    assert r.iterations == 2 * 85  # 84 full batches and one of 3
    assert 0 < len(reads) <= 2 * 4, reads  # per epoch: the end-of-epoch read and evaluation's


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "bf16"])
def test_interrupt_keeps_a_loadable_checkpoint_and_resume_is_exact(digits, tmp_path, amp):
    cfg = TrainConfig(epochs=3, lr=0.05, warmup_epochs=1, augment=True, seed=1, amp=amp)
    full = train(small_cnn(), digits, cfg, checkpoint_path=tmp_path / "full.pt")

    def stop_after_first(record: EpochRecord) -> None:
        if record.epoch == 1:
            raise KeyboardInterrupt

    path = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        train(small_cnn(), digits, cfg, checkpoint_path=path, on_epoch=stop_after_first)
    state = load_checkpoint(path)
    assert len(state["history"]) == 1 and not state["finished"]
    assert state["schedule"]["iteration"] == 11
    assert {"torch", "data"} <= set(state["rng"])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    torch.manual_seed(123)  # resume restores the global RNG too
    resumed = train(small_cnn(seed=99), digits, cfg, checkpoint_path=path, resume=True)
    assert resumed.resumed_from_epoch == 1
    assert untimed(resumed.history) == untimed(full.history)
    assert same_weights(resumed.model, full.model)

    # a finished run is returned as it is, not redone
    calls = []
    again = train(
        small_cnn(seed=5), digits, cfg, checkpoint_path=path, resume=True, on_epoch=calls.append
    )
    assert calls == [] and again.resumed_from_epoch == 3
    assert untimed(again.history) == untimed(full.history) and same_weights(again.model, full.model)


def test_interrupt_while_writing_keeps_the_previous_checkpoint(digits, tmp_path, monkeypatch):
    cfg = TrainConfig(epochs=2, lr=0.05, warmup_epochs=1)
    path = tmp_path / "run.pt"
    real_save = torch.save
    saves = []

    def save_then_interrupt(obj, f, *a, **k):
        saves.append(1)
        if len(saves) == 2:
            f.write(b"half a checkpoint")
            raise KeyboardInterrupt
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(small_cnn(), digits, cfg, checkpoint_path=path)
    monkeypatch.setattr(torch, "save", real_save)
    assert len(load_checkpoint(path)["history"]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt"]  # no temporary file left


def test_resume_without_checkpoint_starts_fresh_and_mismatch_is_refused(digits, tmp_path):
    cfg = TrainConfig(epochs=2, lr=0.05, warmup_epochs=1)
    path = tmp_path / "run.pt"
    r = train(small_cnn(), digits, cfg, checkpoint_path=path, resume=True)
    assert r.resumed_from_epoch == 0 and len(r.history) == 2
    with pytest.raises(TrainError, match=r"lr: 0\.05 in the checkpoint, 0\.1 now"):
        train(
            small_cnn(),
            digits,
            TrainConfig(epochs=2, lr=0.1, warmup_epochs=1),
            checkpoint_path=path,
            resume=True,
        )
    other = load_dataset("digits", val_size=100)
    with pytest.raises(TrainError, match="data split"):
        train(small_cnn(), other, cfg, checkpoint_path=path, resume=True)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(TrainError, match="cannot read checkpoint"):
        train(small_cnn(), digits, cfg, checkpoint_path=path, resume=True)


def test_divergence_is_detected_and_the_run_stops(digits, tmp_path):
    path = tmp_path / "run.pt"
    r = train(
        small_cnn(), digits, TrainConfig(epochs=3, lr=1e6, warmup="none"), checkpoint_path=path
    )
    assert r.diverged and len(r.history) == 1
    assert not math.isfinite(r.history[0].train_loss)
    state = load_checkpoint(path)
    assert state["finished"] and state["diverged"]
    again = train(
        small_cnn(),
        digits,
        TrainConfig(epochs=3, lr=1e6, warmup="none"),
        checkpoint_path=path,
        resume=True,
    )
    assert again.diverged and len(again.history) == 1


def test_out_of_memory_names_the_batch_size(digits):
    class Hungry(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    with pytest.raises(TrainError, match=r"batch size 32.*--batch-size, e\.g\. 16"):
        train(Hungry(), digits, TrainConfig(epochs=1, batch_size=32, warmup="none"))


def test_wrong_number_of_classes_is_explained(digits):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    with pytest.raises(TrainError, match=r"\(128, 10\)"):
        train(model, digits, TrainConfig(epochs=1, warmup="none"))


def test_evaluate_counts_errors_and_loss(digits):
    class Oracle(nn.Module):
        def __init__(self, labels):
            super().__init__()
            self.labels = labels
            self.offset = 0

        def forward(self, x):
            y = self.labels[self.offset : self.offset + len(x)]
            self.offset += len(x)
            logits = torch.zeros(len(x), 10)
            logits[torch.arange(len(x)), y] = 10.0
            odd = torch.arange(0, len(x), 2)
            logits[odd, (y[odd] + 1) % 10] = 20.0  # every other image misclassified
            return logits

    loss, err = evaluate(
        Oracle(digits.test_y), digits.test_x, digits.test_y, digits.mean, digits.std, batch_size=100
    )
    assert err == pytest.approx(225 / 450)
    row_good = -torch.log_softmax(torch.tensor([10.0] + [0.0] * 9), 0)[0]
    row_bad = -torch.log_softmax(torch.tensor([10.0, 20.0] + [0.0] * 8), 0)[0]
    assert loss == pytest.approx(float(row_good + row_bad) / 2, rel=1e-5)


def test_auto_device_and_missing_gpu(digits):
    r = train(linear_model(), digits, TrainConfig(epochs=1, warmup="none", device="auto"))
    assert len(r.history) == 1
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            train(linear_model(), digits, TrainConfig(epochs=1, warmup="none", device="cuda"))


def test_resnet20_on_digits_lowers_the_training_loss(digits):
    nets = pytest.importorskip("residuals.nets")
    torch.manual_seed(0)
    model = nets.build_model("resnet20", in_channels=1, num_classes=10)
    r = train(model, digits, TrainConfig(epochs=2, lr=0.05, warmup_epochs=1))
    assert r.history[-1].train_loss < r.history[0].train_loss
    assert r.history[-1].train_error < 0.5


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_training_with_bf16_and_fused_sgd(digits):
    data = digits.to("cuda")
    cfg = TrainConfig(epochs=2, lr=0.05, warmup="paper", device="cuda", augment=True)
    r = train(small_cnn().to("cuda"), data, cfg)
    assert r.history[-1].train_loss < r.history[0].train_loss
    assert all(rec.seconds > 0 for rec in r.history)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_step_loop_does_not_synchronise(digits):
    import warnings

    data = digits.to("cuda")
    cfg = TrainConfig(epochs=2, batch_size=16, lr=0.05, warmup="paper", device="cuda", augment=True)
    model = small_cnn().to("cuda")
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            r = train(model, data, cfg)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    assert r.iterations == 2 * 85
    assert len(syncs) <= 2 * 8, [str(w.message) for w in syncs[:5]]  # per epoch, not per step


def test_cuda_graph_needs_a_cuda_device(digits):
    for bad in ("yes", 1):
        with pytest.raises(ValueError, match="cuda_graph"):
            TrainConfig(cuda_graph=bad)
    with pytest.raises(TrainError, match="cuda_graph=True needs a CUDA device"):
        train(linear_model(), digits, TrainConfig(epochs=1, warmup="none", cuda_graph=True))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("warmup", ["linear", "paper"])
def test_cuda_graph_trains_like_the_eager_loop(digits, warmup):
    """The captured step replays the eager step's work: same losses, errors, lr and weights.

    Batch 64 on digits leaves a partial last batch, so eager and replayed steps interleave.
    cuDNN picks its kernels per process and both runs share them, so the two agree to
    float rounding; exact equality is not promised.
    """
    nets = pytest.importorskip("residuals.nets")
    data = digits.to("cuda")
    runs = {}
    for graph in (False, True):
        torch.manual_seed(0)
        model = nets.build_model("resnet20", in_channels=1, num_classes=10)
        cfg = TrainConfig(
            epochs=3,
            batch_size=64,
            lr=0.05,
            warmup=warmup,
            warmup_epochs=1,
            device="cuda",
            augment=True,
            cuda_graph=graph,
        )
        runs[graph] = train(model, data, cfg)
    eager, graphed = runs[False], runs[True]
    assert graphed.iterations == eager.iterations
    assert graphed.warmup_end_iteration == eager.warmup_end_iteration
    for a, b in zip(eager.history, graphed.history):
        assert b.lr == pytest.approx(a.lr, rel=1e-6)
        assert b.train_loss == pytest.approx(a.train_loss, rel=2e-2, abs=1e-3)
        assert b.test_error == pytest.approx(a.test_error, abs=0.03)
    assert graphed.history[-1].train_loss < graphed.history[0].train_loss
    for (name, p), q in zip(eager.model.named_parameters(), graphed.model.parameters()):
        torch.testing.assert_close(q, p, rtol=0.1, atol=0.05, msg=name)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_resume_continues_the_run(digits, tmp_path):
    """A checkpointed graphed run resumes (a new capture) and ends where an unbroken one does."""
    data = digits.to("cuda")
    cfg = TrainConfig(epochs=3, batch_size=64, lr=0.05, warmup_epochs=1, device="cuda")
    full = train(small_cnn(), data, cfg)
    path = tmp_path / "ck.pt"
    with pytest.raises(KeyboardInterrupt):
        train(small_cnn(), data, cfg, checkpoint_path=path, on_epoch=stop_after(2))
    resumed = train(small_cnn(), data, cfg, checkpoint_path=path, resume=True)
    assert resumed.resumed_from_epoch == 2
    assert resumed.history[-1].train_loss == pytest.approx(full.history[-1].train_loss, rel=2e-2)


def test_resume_keeps_the_precision_the_run_started_with(digits, tmp_path, monkeypatch):
    """amp=None resolves by thread count on the CPU; a resume under another count keeps the
    checkpoint's precision, so it goes on exactly as an unbroken run."""
    cfg = TrainConfig(epochs=2, lr=0.05, warmup_epochs=1, seed=2)  # amp=None
    monkeypatch.setattr(rdevice, "cpu_has_native_bf16", lambda: True)
    full = train(small_cnn(), digits, cfg)  # one thread (the autouse fixture): bf16
    assert full.amp is True

    path = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        train(small_cnn(), digits, cfg, checkpoint_path=path, on_epoch=stop_after(1))
    assert load_checkpoint(path)["amp"] is True
    torch.set_num_threads(2)  # would resolve to fp32 on a fresh start
    assert rdevice.resolve_amp(None, "cpu") is False
    resumed = train(small_cnn(), digits, cfg, checkpoint_path=path, resume=True)
    torch.set_num_threads(1)
    assert resumed.amp is True
    assert resumed.history[-1].train_loss == pytest.approx(full.history[-1].train_loss, rel=1e-4)
