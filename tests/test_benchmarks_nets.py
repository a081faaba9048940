"""Smoke tests of the nets speed benchmarks (benchmarks/nets_throughput.py, sweep_time.py).

Tiny configurations on the CPU: they check that each script runs end to end, that
its tables have the documented columns, that both loops really trained, and that
the FLOP counter agrees with the paper. No speed is asserted here (speed targets
live in benchmarks/README.md).
"""

from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def scripts():
    sys.path.insert(0, str(BENCH))
    try:
        yield {
            name: importlib.import_module(name)
            for name in ("_machine", "nets_throughput", "sweep_time")
        }
    finally:
        sys.path.remove(str(BENCH))


# ------------------------------------------------------------------ _machine
def test_spread_and_rates(scripts):
    m = scripts["_machine"]
    s = m.spread([2.0, 1.0, 4.0])
    assert (s.median, s.min, s.max, s.n) == (2.0, 1.0, 4.0, 3)
    rate = s.inverted(8.0)  # seconds -> items/s: min and max swap
    assert (rate.median, rate.min, rate.max) == (4.0, 2.0, 8.0)
    with pytest.raises(ValueError, match="at least one"):
        m.spread([])
    assert m.format_si(1.23e9) == "1.23G" and m.format_si(float("nan")) == "n/a"


def test_time_block_measures_cpu_work(scripts):
    import time

    m = scripts["_machine"]
    with m.time_block("cpu") as t:
        time.sleep(0.02)
    assert 0.015 < t.seconds < 1.0


def test_machine_limits_are_measured(scripts):
    m = scripts["_machine"]
    peak = m.matmul_peak("cpu", n=256, iters=2, repeats=2)
    bw = m.copy_bandwidth("cpu", nbytes=8 << 20, iters=1, repeats=2)
    # sane for any CPU, even one shared with busy neighbours: 10 MFLOP/s-100 TFLOP/s, 10 MB/s-10 TB/s
    assert 1e7 < peak.median < 1e14 and peak.min <= peak.median <= peak.max
    assert 1e7 < bw.median < 1e13 and bw.min <= bw.median <= bw.max
    info = m.machine_info("cpu")
    assert info["machine"]["cpu_count"] >= 1 and info["versions"]["torch"] == torch.__version__
    assert info["machine"]["torch_threads"] == torch.get_num_threads()


# ------------------------------------------------------------------ counting
def test_resnet20_forward_flops_match_the_paper(scripts):
    """ResNet-20 is quoted at ~41M FLOPs on 32x32 inputs, a FLOP being a multiply-add as in
    He et al. 2015 (Sec. 3.3: "3.6 billion FLOPs (multiply-adds)").

    Our counter gives 40.55M MACs (by hand: 3x3 convs 0.44M + 14.16M + 12.98M +
    12.98M, FC 640); BN/ReLU/adds are not counted. Tolerance 2%.
    """
    from residuals.nets import build_model

    nt = scripts["nets_throughput"]
    fwd, train = nt.count_flops(build_model("resnet20"))
    assert fwd / 2 == pytest.approx(41e6, rel=0.02)
    assert fwd / 2 == pytest.approx(40_551_040, rel=1e-6)  # exact, by hand (see docstring)
    assert 2.9 < train / fwd <= 3.0  # backward = 2x forward, but no input grad for the first conv
    macs56 = nt.count_flops(build_model("resnet56"))[0] / 2
    assert macs56 == pytest.approx(125e6, rel=0.02)  # the usual ResNet-56 figure


@pytest.mark.parametrize(
    "name, kwargs", [("resnet8", {}), ("plain8", {}), ("resnet8", {"shortcut": "B"})]
)
def test_analytic_flops_equal_torch_flop_counter(scripts, name, kwargs):
    """The hook-based count (fast) equals torch's FlopCounterMode, forward and backward."""
    from residuals.nets import build_model

    nt = scripts["nets_throughput"]
    model = build_model(name, **kwargs)
    assert nt.count_flops(model) == nt.count_flops_dispatch(model)


def test_traffic_estimate_grows_with_batch_and_leaves_model_alone(scripts):
    from residuals.nets import build_model

    nt = scripts["nets_throughput"]
    model = build_model("resnet8")
    before = [p.clone() for p in model.parameters()]
    b4 = nt.count_traffic(model, 4, device="cpu")
    b8 = nt.count_traffic(model, 8, device="cpu")
    weights = sum(p.numel() * 4 for p in model.parameters())
    assert b4 > 7 * weights  # at least: weights read, grads written, SGD read/write
    assert b8 > b4 * 1.3  # activations scale with the batch
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))


def test_tutorial_dataset_is_torchvision_like(scripts):
    nt = scripts["nets_throughput"]
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 3])
    ds = nt.TutorialDataset(images, labels, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), pad=0)
    x, y = ds[2]
    assert x.dtype == torch.float32 and x.shape == (3, 32, 32) and y == 2
    plain = (images[2].float() / 255 - 0.5) / 0.25
    assert torch.allclose(x, plain) or torch.allclose(x, plain.flip(-1))  # pad 0: only the flip
    ds4 = nt.TutorialDataset(images, labels)  # pad 4: crops move pixels
    assert ds4[0][0].shape == (3, 32, 32)


# ------------------------------------------------------------------ scripts
RESULT_COLUMNS = {
    "model",
    "loop",
    "workers",
    "batch_size",
    "images_per_s",
    "images_per_s_min",
    "images_per_s_max",
    "speedup",
    "speedup_paired",
    "speedup_paired_min",
    "speedup_paired_max",
    "forward_macs_per_image",
    "train_flops_per_image",
    "achieved_flops_s",
    "precision",
    "peak_flops_s",
    "flops_fraction",
    "bytes_per_step",
    "achieved_bytes_s",
    "copy_bytes_s",
    "bytes_fraction",
    "peak_memory_bytes",
    "first_loss",
    "last_loss",
    "params_changed",
}


def test_nets_throughput_main_smoke(scripts, tmp_path):
    nt = scripts["nets_throughput"]
    tables = nt.main(
        [
            "--models",
            "resnet8",
            "--batch-size",
            "8",
            "--steps",
            "2",
            "--repeats",
            "1",
            "--workers",
            "0",
            "--big-model",
            "resnet8",
            "--big-batch",
            "4",
            "--big-steps",
            "2",
            "--limit-repeats",
            "1",
            "--matmul-n",
            "256",
            "--copy-mib",
            "8",
            "--out",
            str(tmp_path),
        ]
    )
    res = tables["results"]
    assert RESULT_COLUMNS <= set(res.columns)
    assert list(res["loop"]) == ["reference", "project"]
    for row in res.itertuples():  # both loops really trained
        assert math.isfinite(row.first_loss) and math.isfinite(row.last_loss)
        assert row.params_changed
        assert (
            row.images_per_s > 0
            and row.images_per_s_min <= row.images_per_s <= row.images_per_s_max
        )
        assert 0 < row.flops_fraction and 0 < row.bytes_fraction
    assert res["speedup"].iloc[0] == 1.0 and res["speedup_paired"].iloc[0] == 1.0
    assert res["speedup"].iloc[1] == pytest.approx(
        res["images_per_s"].iloc[1] / res["images_per_s"].iloc[0]
    )
    limits = tables["limits"]
    assert set(limits["quantity"]) == {"matmul", "copy"}
    assert set(limits["when"]) == {"start", "resnet8 round 1", "resnet8 round 2", "end"}
    # fractions are against the best the machine showed (the ceiling), never above the max measured
    assert res["copy_bytes_s"].iloc[0] == limits.query("quantity == 'copy'")["max"].max()
    assert list(tables["goals"]["status"]) == ["not measured", "not measured"]  # resnet56 not run
    assert bool(tables["big_model"]["trained"].iloc[0])
    doc = json.loads((tmp_path / "nets_throughput.json").read_text())
    assert doc["machine"]["cpu_count"] >= 1 and doc["config"]["models"] == ["resnet8"]
    assert {"results", "limits", "big_model"} <= set(doc["tables"])
    assert (tmp_path / "nets_throughput.csv").is_file() and (
        tmp_path / "nets_throughput-limits.csv"
    ).is_file()


def test_sweep_time_main_smoke(scripts, tmp_path):
    st = scripts["sweep_time"]
    tables = st.main(
        [
            "--sweeps",
            "fashion-mnist",
            "--depths",
            "8",
            "--steps",
            "1",
            "--repeats",
            "1",
            "--eval-images",
            "16",
            "--out",
            str(tmp_path),
        ]
    )
    per_model = tables["per_model"]
    assert list(per_model["model"]) == ["plain8", "resnet8"]
    assert (per_model["iterations_per_run"] == 15 * 469).all()  # the preset: 15 epochs of 60k/128
    assert per_model["params_changed"].all() and per_model["last_loss"].map(math.isfinite).all()
    assert (per_model["s_per_step"] > 0).all() and (per_model["s_per_eval_image"] > 0).all()
    row = per_model.iloc[0]
    expected = (
        row.iterations_per_run * row.s_per_step + row.epochs_per_run * 10_000 * row.s_per_eval_image
    )
    assert row.projected_run_s == pytest.approx(expected)
    summary = tables["results"].iloc[0]
    assert summary.kind == "projected" and summary.runs == 6  # 2 models x 3 seeds
    assert summary.seconds == pytest.approx(3 * per_model["projected_run_s"].sum())
    assert summary.seconds_min <= summary.seconds <= summary.seconds_max
    assert (tmp_path / "sweep_time.json").is_file()


@pytest.mark.slow
def test_sweep_time_runs_and_times_the_real_command(scripts, tmp_path):
    """The measured path: a tiny digits sweep through the real CLI, timed."""
    st = scripts["sweep_time"]
    cfg = st.SweepTimeConfig(
        run=True,
        run_preset="digits",
        seeds=1,
        jobs=1,
        run_args=("--depths", "8", "--variants", "residual", "--epochs", "1", "--warmup", "none"),
    )
    measured = st.run_sweep(cfg)
    assert measured["exit_code"] == 0, measured["stderr_tail"]
    assert measured["runs"] == 1 and measured["status"] == "complete"
    assert 0 < measured["train_s_sum"] <= measured["wall_s"]


def test_ablation_flips_each_switch_and_repeats_the_defaults(scripts, monkeypatch):
    nt = scripts["nets_throughput"]
    monkeypatch.setattr(nt, "ABLATION_SWITCHES", ("channels_last", "amp"))  # compile: too slow here
    cfg = nt.ThroughputConfig(batch_size=8, steps=2, repeats=1, ablation_models=("resnet8",))
    df = nt.ablation(cfg)
    # on the CPU the trainer's defaults are channels_last=True and amp on where the CPU has native
    # bf16, off elsewhere: the ablation flips what the default resolves to
    from residuals.device import resolve_amp

    amp = f"amp={not resolve_amp(None, 'cpu')}"
    assert list(df["setting"]) == ["defaults", "channels_last=False", amp, "defaults (again)"]
    assert df["params_changed"].all() and df["last_loss"].map(math.isfinite).all()
    assert df.loc[df["setting"].str.startswith("defaults"), "vs_defaults"].mean() == pytest.approx(
        1.0
    )


@pytest.mark.slow
def test_ablation_compares_replicas_with_one_model_on_a_multi_core_cpu(scripts, monkeypatch):
    """With two torch threads the trainer's default splits a batch of 64 between two one-thread
    replicas; the ablation adds one model on both threads. With one thread there is nothing to flip."""
    nt = scripts["nets_throughput"]
    monkeypatch.setattr(nt, "ABLATION_SWITCHES", ("replicas",))
    cfg = nt.ThroughputConfig(batch_size=64, steps=1, repeats=1, ablation_models=("resnet8",))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        df = nt.ablation(cfg)
    finally:
        torch.set_num_threads(before)
    from residuals.device import cpu_has_native_bf16

    # amp's default follows the threads per replica: where the CPU has native bf16 the default
    # trains in bf16 and replicas=1 (two threads) in fp32, so a row keeps bf16 with one model
    native = cpu_has_native_bf16()
    assert list(df["setting"]) == (
        ["defaults", "replicas=1"] + ["replicas=1, amp=True"] * native + ["defaults (again)"]
    )
    assert list(df["replicas"]) == [2, 1] + [1] * native + [2]
    bf16 = "bf16" if native else "fp32"
    assert list(df["precision"]) == [bf16, "fp32"] + ["bf16"] * native + [bf16]
    assert df["params_changed"].all()
    df = nt.ablation(cfg)  # one thread: the default is one model already
    assert list(df["setting"]) == ["defaults", "defaults (again)"]


@pytest.mark.slow
def test_sweep_time_reports_a_failed_sweep_as_failed(scripts):
    """A sweep that cannot run (here: a depth that is not 6n+2) has no wall time to report."""
    st = scripts["sweep_time"]
    cfg = st.SweepTimeConfig(
        sweeps=("fashion-mnist",),
        depths=(8,),
        steps=1,
        repeats=1,
        eval_images=8,
        run=True,
        run_preset="digits",
        seeds=1,
        run_args=("--depths", "7"),
    )
    tables = st.run(cfg)
    measured = tables["measured"].iloc[0]
    assert measured["exit_code"] != 0 and "depth" in measured["stderr_tail"].lower()
    row = tables["results"].query("kind != 'projected'").iloc[0]
    assert row["kind"] == "failed" and math.isnan(row["seconds"])
    assert tables["goals"]["status"].iloc[0] == "not measured"


def test_in_turn_interleaves_epochs_and_raises_a_jobs_error(scripts):
    nt = scripts["nets_throughput"]
    log = []

    def job(name, epochs, fail_at=None):
        def run(on_epoch):
            for e in range(1, epochs + 1):
                log.append((name, e))
                if e == fail_at:
                    raise RuntimeError(f"{name} failed")
                on_epoch(e)
            return name

        return run

    assert nt.in_turn([job("a", 3), job("b", 2), job("c", 3)]) == ["a", "b", "c"]
    assert log == [("a", 1), ("b", 1), ("c", 1), ("a", 2), ("b", 2), ("c", 2), ("a", 3), ("c", 3)]
    log.clear()
    with pytest.raises(RuntimeError, match="b failed"):
        nt.in_turn([job("a", 2), job("b", 2, fail_at=1)])
    assert log == [("a", 1), ("b", 1), ("a", 2)]


@pytest.mark.slow
def test_cpu_layout_smoke(tmp_path):
    """benchmarks/cpu_layout.py: two one-thread trainer processes against the tutorial loop, end to end."""
    import subprocess

    import pandas as pd

    script = BENCH / "cpu_layout.py"
    out = subprocess.run(
        [
            sys.executable,
            str(script),
            "--models",
            "resnet8",
            "--processes",
            "2",
            "--batch-size",
            "8",
            "--steps",
            "2",
            "--repeats",
            "2",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    res = pd.read_csv(tmp_path / "cpu_layout.csv")
    row = res.iloc[0]
    assert row["model"] == "resnet8" and row["processes"] == 2 and row["repeats"] == 2
    assert (
        row["project_images_per_s_min"]
        <= row["project_images_per_s"]
        <= row["project_images_per_s_max"]
    )
    assert row["tutorial_images_per_s"] > 0
    assert row["speedup"] == pytest.approx(
        row["project_images_per_s"] / row["tutorial_images_per_s"]
    )
    assert row["project_precision"] in ("bf16", "fp32")
    doc = json.loads((tmp_path / "cpu_layout.json").read_text())
    assert doc["config"]["processes"] == 2 and doc["benchmark"] == "cpu_layout"
    assert "resnet8: 2 one-thread trainer processes" in out.stdout
    bad = subprocess.run(
        [sys.executable, str(script), "--repeats", "0"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "repeats must be >= 1" in bad.stderr
