"""`residuals bench degradation`: the sweep, its tables, verdict, report and command line.

The end-to-end runs use the embedded digits with the smallest nets (depths 8
and 14), two epochs and one seed: one sweep in two worker processes (the CPU
default), the others in this process (``--jobs 1``) so that the trainer can be
counted, interrupted and made to run out of memory with monkeypatch.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import fields

import pandas as pd
import pytest
from click.testing import CliRunner

from residuals.bench import degradation as deg
from residuals.bench.degradation.report import render
from residuals.bench.degradation_cli import degradation as degradation_cmd
from residuals.runs import RunDir
from residuals.train import TrainConfig

# the CPU default path: two spawned worker processes with one torch thread each
TINY = ["--depths", "8,14", "--epochs", "2", "--seeds", "1", "--jobs", "2"]


def invoke(*args):
    return CliRunner().invoke(degradation_cmd, [str(a) for a in args], catch_exceptions=False)


def only_run(out) -> RunDir:
    runs = [p for p in out.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return RunDir(runs[0])


@pytest.fixture(autouse=True)
def no_user_data(tmp_path, monkeypatch):
    """Keep the user's data cache and the network out of every test; close figures after it."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("RESIDUALS_DATA", raising=False)

    def offline(url, dest, timeout=60.0):
        raise OSError("network is unreachable (test)")

    monkeypatch.setattr("residuals.data.files.fetch_url", offline)
    yield
    if "matplotlib.pyplot" in sys.modules:  # the renderer's figures, once checked
        sys.modules["matplotlib.pyplot"].close("all")


# --------------------------------------------------------------------------- verdict
def runs_table(errors: dict, *, diverged: dict | None = None) -> pd.DataFrame:
    """A runs.csv: ``errors[(variant, depth)]`` = final train errors (fractions), one per seed."""
    rows = []
    for (variant, depth), errs in errors.items():
        statuses = (diverged or {}).get((variant, depth), [])
        for seed, err in enumerate(errs):
            status = "diverged" if seed in statuses else "complete"
            rows.append(
                {
                    "model": deg.model_label(variant, depth).replace("-", ""),
                    "variant": variant,
                    "depth": depth,
                    "seed": seed,
                    "status": status,
                    "epochs": 10,
                    "final_train_error": err,
                    "final_test_error": err + 0.02,
                    "best_test_error": err + 0.01,
                    "images_per_s": 1000.0,
                    "train_s": 10.0,
                    "wall_s": 11.0,
                    "device": "cpu",
                    "threads": 1,
                }
            )
    return pd.DataFrame(rows)


def test_verdict_reproduced_names_the_numbers():
    runs = runs_table(
        {
            ("plain", 20): [0.001],
            ("plain", 56): [0.851],
            ("residual", 20): [0.0],
            ("residual", 56): [0.001],
        }
    )
    v = deg.degradation_verdict(runs)
    assert v.reproduced is True
    assert v.headline == (
        "degradation reproduced: plain-56 training error 85.1% > plain-20 0.1%; "
        "resnet-56 0.1% <= resnet-20 0.0%"
    )


def test_verdict_uses_seed_means_and_shows_spread():
    runs = runs_table(
        {
            ("plain", 20): [0.0, 0.002],
            ("plain", 56): [0.6, 0.8],
            ("residual", 20): [0.0, 0.0],
            ("residual", 56): [0.0, 0.004],
        }
    )
    v = deg.degradation_verdict(runs)
    assert v.reproduced is True
    assert "plain-56 training error 70.0% ± 14.1 > plain-20 0.1% ± 0.1" in v.headline
    assert v.headline.endswith("(means over 2 seeds)")


def test_verdict_not_reproduced_when_plain_does_not_degrade():
    runs = runs_table(
        {
            ("plain", 20): [0.01],
            ("plain", 56): [0.015],
            ("residual", 20): [0.0],
            ("residual", 56): [0.0],
        }
    )
    v = deg.degradation_verdict(runs)
    assert v.reproduced is False
    assert v.headline.startswith(
        "degradation not reproduced (plain-56 is not worse than plain-20 by more than 1 points)"
    )
    assert "1.5% vs plain-20 1.0%" in v.headline


def test_verdict_asks_the_plain_gap_to_stand_out_of_the_seed_spread():
    # Fashion-MNIST on an H100, 3 seeds: a 4.2-point gap, far outside the spread
    fashion = runs_table(
        {
            ("plain", 20): [0.005, 0.005, 0.006],
            ("plain", 56): [0.047, 0.045, 0.050],
            ("residual", 20): [0.001, 0.001, 0.001],
            ("residual", 56): [0.0, 0.0, 0.0],
        }
    )
    assert deg.degradation_verdict(fashion).reproduced is True
    # a 3-point mean gap, but the seeds scatter over 20 points: not significant
    noisy = runs_table(
        {
            ("plain", 20): [0.0, 0.0, 0.0],
            ("plain", 56): [0.0, 0.0, 0.09],
            ("residual", 20): [0.0, 0.0, 0.0],
            ("residual", 56): [0.0, 0.0, 0.0],
        }
    )
    v = deg.degradation_verdict(noisy)
    assert v.reproduced is False
    # se = 5.2 / sqrt(3) = 3.0 points; 2 se = 6.0 points
    assert "by more than 6.0 points (2 standard errors over seeds)" in v.headline


def test_verdict_not_reproduced_when_the_residual_net_also_degrades():
    runs = runs_table(
        {
            ("plain", 20): [0.0],
            ("plain", 56): [0.8],
            ("residual", 20): [0.0],
            ("residual", 56): [0.3],
        }
    )
    v = deg.degradation_verdict(runs)
    assert v.reproduced is False
    assert "resnet-56 is worse than resnet-20 by more than 1 points" in v.headline
    assert "resnet-56 30.0% > resnet-20 0.0%" in v.headline


def test_verdict_boundaries_are_strict_for_plain_and_inclusive_for_residual():
    at_margin = runs_table(
        {
            ("plain", 20): [0.0],
            ("plain", 56): [0.01],
            ("residual", 20): [0.0],
            ("residual", 56): [0.01],
        }
    )
    assert deg.degradation_verdict(at_margin).reproduced is False  # 1 point: not > 1
    above = runs_table(
        {
            ("plain", 20): [0.0],
            ("plain", 56): [0.0101],
            ("residual", 20): [0.0],
            ("residual", 56): [0.01],
        }
    )
    assert deg.degradation_verdict(above).reproduced is True  # residual +1 point: ok


def test_verdict_leaves_diverged_seeds_out_and_says_so():
    runs = runs_table(
        {
            ("plain", 20): [0.0, 0.0],
            ("plain", 56): [0.9, 0.7],
            ("residual", 20): [0.0, 0.0],
            ("residual", 56): [0.0, 0.0],
        },
        diverged={("plain", 56): [0]},
    )
    v = deg.degradation_verdict(runs)
    assert v.reproduced is True
    assert "plain-56 training error 70.0% >" in v.headline  # the diverged 90% is not averaged
    assert v.notes == ("plain-56: 1 of 2 seeds diverged (left out of the mean)",)


def test_verdict_is_none_when_every_seed_of_a_cell_diverged():
    runs = runs_table(
        {
            ("plain", 20): [0.0],
            ("plain", 56): [0.9],
            ("residual", 20): [0.0],
            ("residual", 56): [0.0],
        },
        diverged={("plain", 56): [0]},
    )
    v = deg.degradation_verdict(runs)
    assert v.reproduced is None
    assert v.headline.startswith("no verdict: every plain-56 run diverged")


@pytest.mark.parametrize(
    "errors, expected",
    [
        ({("plain", 20): [0.0], ("plain", 56): [0.9]}, "plain at 20, 56"),
        ({("plain", 20): [0.0], ("residual", 20): [0.0]}, "plain, residual at 20"),
    ],
)
def test_verdict_needs_both_variants_at_two_depths(errors, expected):
    v = deg.degradation_verdict(runs_table(errors))
    assert v.reproduced is None and expected in v.headline
    assert deg.degradation_verdict(runs_table({})).headline == "no verdict: no run has finished yet"


def test_final_errors_table():
    runs = runs_table(
        {("plain", 20): [0.1, 0.3], ("residual", 20): [0.0, 0.2]}, diverged={("residual", 20): [1]}
    )
    fe = deg.final_errors(runs).set_index("model")
    assert fe.loc["plain-20", "train_error_mean"] == pytest.approx(0.2)
    assert fe.loc["plain-20", "train_error_std"] == pytest.approx(0.1414, abs=1e-4)
    assert fe.loc["resnet-20", ["n_seeds", "n_diverged"]].tolist() == [1, 1]


def synthetic_run(tmp_path, runs: pd.DataFrame) -> RunDir:
    """A run folder whose tables are made up from ``runs`` (3 epochs, 3 blocks per net)."""
    cfg = deg.DegradationConfig(
        depths=tuple(sorted(set(runs["depth"]))),
        seeds=int(runs["seed"].max()) + 1,
        train=TrainConfig(epochs=3, warmup="none"),
    )
    run = RunDir.create(tmp_path, bench="degradation", dataset="digits", config=cfg.to_dict())
    results, probes = [], []
    for r in runs.itertuples():
        ids = {"model": r.model, "variant": r.variant, "depth": r.depth, "seed": r.seed}
        bad = r.status == "diverged"
        for epoch in (1, 2, 3):
            results.append(
                {
                    **ids,
                    "epoch": epoch,
                    "train_loss": float("nan") if bad else 1.0 / epoch,
                    "train_error": min(1.0, r.final_train_error + 0.1 * (3 - epoch)),
                    "test_loss": 1.0,
                    "test_error": r.final_test_error,
                    "lr": 0.1,
                    "seconds": 1.0,
                    "images_per_s": 1000.0,
                    "status": r.status,
                }
            )
        for block in range(3):
            probes.append(
                {
                    **ids,
                    "block": block,
                    "stage": block + 1,
                    "response_std": float("nan") if bad else 1.0 + block,
                    "input_grad_norm": 0.1,
                    "param_grad_norm": 0.2,
                }
            )
    run.write_table(pd.DataFrame(results), "results")
    run.write_table(runs.assign(epochs=3), "runs")
    run.write_table(pd.DataFrame(probes), "probes")
    return run


def test_render_with_a_diverged_run(tmp_path):
    runs = runs_table(
        {
            ("plain", 20): [0.0, 0.0],
            ("plain", 56): [0.9, 0.7],
            ("residual", 20): [0.0, 0.0],
            ("residual", 56): [0.0, 0.0],
        },
        diverged={("plain", 56): [0]},
    )
    content = render(synthetic_run(tmp_path, runs))
    assert content.verdict is True and content.headline.startswith("degradation reproduced")
    assert "Note: plain-56: 1 of 2 seeds diverged (left out of the mean)." in content.intro
    assert [f.key for f in content.figures] == [
        "error_curves",
        "error_vs_depth",
        "layer_responses",
        "gradient_norms",
    ]
    final = content.tables[0].data.set_index("net")
    assert final.loc["plain-56", ["seeds", "diverged"]].tolist() == [1, 1]
    assert final.loc["plain-56", "train error %_mean"] == pytest.approx(70.0)
    by_depth = content.figures[1].data
    assert set(by_depth["status"]) == {"complete", "diverged"}  # drawn as crosses, kept in the data


# --------------------------------------------------------------------------- config and plan
def test_presets_and_plan():
    assert set(deg.PRESETS) == {"digits", "fashion-mnist", "paper"}
    default = deg.PRESETS[deg.DEFAULT_PRESET]
    assert default.dataset == "digits" and default.depths == (20, 32, 44, 56)
    paper = deg.PRESETS["paper"]
    assert paper.depths == (20, 32, 44, 56, 110) and paper.train.lr == 0.1
    assert paper.train.batch_size == 128
    assert paper.train.schedule == "step" and paper.train.augment and paper.val_size == 5000
    assert paper.warmup_for(56) == "none" and paper.warmup_for(110) == "paper"
    plan = deg.plan_runs(default)
    assert len(plan) == 2 * 4 * default.seeds
    assert [s.depth for s in plan][:2] == [56, 56]  # the longest runs first
    assert plan[0].model in ("plain56", "resnet56") and plan[0].label.endswith("-56")


def test_help_is_generated_from_the_presets_and_the_verdict_constants():
    from residuals.bench.degradation_cli import PRESET_NAMES, VARIANT_NAMES, WARMUPS
    from residuals.train import WARMUPS as TRAIN_WARMUPS

    assert PRESET_NAMES == tuple(deg.PRESETS) and VARIANT_NAMES == tuple(deg.VARIANTS)
    assert WARMUPS == TRAIN_WARMUPS
    out = " ".join(CliRunner().invoke(degradation_cmd, ["--help"]).output.split())
    for name in deg.PRESETS:
        assert f"{name} {deg.describe_preset(name)}" in out
    assert deg.verdict_rule() in out
    d, p = deg.PRESETS["digits"].train, deg.PRESETS["paper"]
    assert (
        f"Depths 20, 32, 44, 56; 2 seeds; {d.epochs} epochs, batch {d.batch_size}, lr {d.lr:g}, wd 1e-4, "
        f"cosine schedule, {d.warmup_epochs:g}-epoch linear warm-up."
    ) in deg.describe_preset("digits")
    assert "paper warm-up from depth 110" in deg.describe_preset("paper") and p.val_size == 5000
    assert (
        f"more than {deg.DEGRADATION_MARGIN:g} point and by more than {deg.SIGNIFICANCE:g} "
        "standard errors"
    ) in deg.verdict_rule()
    assert f"at most {deg.RESIDUAL_TOLERANCE:g} point" in deg.verdict_rule()


def test_overrides_keep_the_warm_up_share():
    assert deg.configure("digits", epochs=24).train.warmup_epochs == pytest.approx(4.0)
    paper = deg.configure("paper", warmup="linear")
    assert (
        paper.train.warmup_epochs == pytest.approx(182 / 6)
        and paper.paper_warmup_from_depth is None
    )
    assert deg.configure("paper", epochs=10).train.warmup_epochs == 0.0  # still no warm-up
    assert deg.configure("paper", epochs=10).warmup_for(110) == "paper"
    with pytest.raises(ValueError, match="unknown preset"):
        deg.configure("imagenet")


def test_config_holds_the_trainers_recipe():
    cfg = deg.configure("digits", lr=0.2)
    assert isinstance(cfg.train, TrainConfig) and cfg.train.lr == 0.2
    run_cfg = cfg.train_config(56, 4, "cpu")
    assert (run_cfg.seed, run_cfg.device, run_cfg.lr, run_cfg.epochs) == (4, "cpu", 0.2, 12)
    # meta.json keeps the flat form old run folders have, and reads it back
    flat = cfg.to_dict()
    assert flat["lr"] == 0.2 and "train" not in flat and "first_seed" not in flat
    assert deg.DegradationConfig.from_dict(flat) == cfg
    shifted = cfg.replace(first_seed=5, seeds=2)
    assert {s.seed for s in deg.plan_runs(shifted)} == {5, 6}
    assert deg.DegradationConfig.from_dict(shifted.to_dict()) == shifted
    with pytest.raises(ValueError, match="warmup_epochs"):
        cfg.replace(epochs=2)  # the trainer's own checks apply to the recipe


def test_config_round_trips_through_json():
    cfg = deg.PRESETS["paper"]
    back = deg.DegradationConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg
    with pytest.raises(ValueError, match="unknown keys"):
        deg.DegradationConfig.from_dict({**cfg.to_dict(), "depth": 3})
    with pytest.raises(ValueError, match="choose from plain, residual"):
        deg.DegradationConfig(variants=("plain", "dense"))


def test_tables_drop_rows_of_runs_that_never_reached_runs_csv(tmp_path):
    """A sweep stopped between writing results.csv and runs.csv must not duplicate rows on resume."""
    run = RunDir.create(tmp_path, bench="degradation", dataset="digits", config={})
    finished = runs_table({("plain", 8): [0.1]})
    run.write_table(finished, "runs")
    finished["epochs"] = 1
    run.write_table(finished, "runs")
    rows = [
        {
            "model": m,
            "variant": v,
            "depth": 8,
            "seed": 0,
            "epoch": 1,
            "train_error": 0.1,
            "test_error": 0.2,
        }
        for m, v in (("plain8", "plain"), ("resnet8", "residual"))
    ]
    run.write_table(pd.DataFrame(rows), "results")
    probes = [
        {"model": m, "variant": v, "depth": 8, "seed": 0, "block": 0, "response_std": 1.0}
        for m, v in (("plain8", "plain"), ("resnet8", "residual"))
    ]
    run.write_table(pd.DataFrame(probes), "probes")
    from residuals.bench.degradation.tables import SweepTables

    tables = SweepTables(run)
    assert tables.frames["results"]["model"].tolist() == ["plain8"]
    assert tables.frames["probes"]["model"].tolist() == ["plain8"]
    assert deg.finished_runs(run) == {("plain", 8, 0)}


# --------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One real sweep on the digits: plain and residual nets of depth 8 and 14, 2 epochs, 2 workers."""
    out = tmp_path_factory.mktemp("reports")
    result = invoke(*TINY, "--out", out)
    assert result.exit_code == 0, result.output
    return only_run(out), result.output


@pytest.mark.slow
def test_cli_writes_a_complete_run_folder(tiny_run):
    from residuals.train import EpochRecord

    run, output = tiny_run
    meta = run.meta
    assert meta["status"] == "complete" and meta["bench"] == "degradation"
    assert meta["config"]["depths"] == [8, 14] and meta["config"]["seeds"] == 1
    assert meta["machine"]["device"] == "cpu" and meta["wall_s"] > 0
    assert meta["headline"].startswith(("degradation reproduced", "degradation not reproduced"))
    assert meta["headline"] in output and f"run folder: {run.path}" in output
    from residuals.device import resolve_amp

    precision = "bf16 autocast" if resolve_amp(None, "cpu", threads=1) else "fp32"  # 2 workers
    assert f"on cpu ({precision}), 2 at a time" in output and meta["precision"] == precision
    assert output.count("epoch   2/2") == 4 and "ETA" in output  # progress relayed per epoch

    results = run.read_table("results")
    epoch_fields = [f.name for f in fields(EpochRecord)]
    assert list(results.columns) == ["model", "variant", "depth", "seed", *epoch_fields, "status"]
    assert len(results) == 4 * 2  # 4 nets x 2 epochs
    assert set(results["model"]) == {"plain8", "plain14", "resnet8", "resnet14"}
    assert results["train_error"].between(0, 1).all() and (results["images_per_s"] > 0).all()
    assert (results["status"] == "complete").all()

    runs = run.read_table("runs")
    assert len(runs) == 4 and (runs["epochs"] == 2).all()
    for col in (
        "final_train_error",
        "final_test_error",
        "images_per_s",
        "train_s",
        "wall_s",
        "status",
    ):
        assert runs[col].notna().all(), col
    assert (runs["threads"] == 1).all() and (runs["device"] == "cpu").all()
    from residuals.device import cpu_has_native_bf16  # 1-thread workers: bf16 where native

    assert (runs["precision"] == ("bf16" if cpu_has_native_bf16() else "fp32")).all()
    last = results[results["epoch"] == 2].set_index("model")["train_error"]
    assert runs.set_index("model")["final_train_error"].to_dict() == pytest.approx(last.to_dict())

    probes = run.read_table("probes")
    assert len(probes) == 2 * (3 + 6)  # depth 8: 3 blocks, depth 14: 6 blocks
    for col in ("block", "stage", "response_std", "input_grad_norm", "param_grad_norm"):
        assert probes[col].notna().all(), col
    assert (probes["response_std"] > 0).all() and (probes["param_grad_norm"] > 0).all()

    assert sorted(p.name for p in (run.path / "checkpoints").iterdir()) == [
        "plain14-seed0.pt",
        "plain8-seed0.pt",
        "resnet14-seed0.pt",
        "resnet8-seed0.pt",
    ]
    assert f"{run.path / 'index.html'}" in output and run.html_path.is_file()
    assert {p.name for p in run.figures_dir.glob("*.png")} == {
        "error_curves.png",
        "error_vs_depth.png",
        "layer_responses.png",
        "gradient_norms.png",
    }


def test_render_is_a_pure_function_of_the_saved_tables(tiny_run, tmp_path):
    run, _ = tiny_run
    # a copy without checkpoints, figures or html: the CSVs and meta.json are enough
    copy = RunDir(tmp_path / run.path.name)
    copy.path.mkdir()
    for name in ("meta.json", "results.csv", "runs.csv", "probes.csv"):
        shutil.copy(run.path / name, copy.path / name)
    first, second = render(run), render(copy)
    assert first.headline == second.headline == run.meta["headline"]
    assert first.verdict is second.verdict is run.meta["verdict"]
    assert [f.key for f in first.figures] == [
        "error_curves",
        "error_vs_depth",
        "layer_responses",
        "gradient_norms",
    ]
    for a, b in zip(first.figures, second.figures):
        pd.testing.assert_frame_equal(a.data, b.data)
        assert a.title and a.caption
        axes = [ax for ax in a.fig.axes if ax.has_data()]
        assert axes and all(ax.get_title() and ax.get_xlabel() for ax in axes), a.key
        assert any(ax.get_legend() for ax in axes) and axes[0].get_ylabel(), a.key
    assert [t.key for t in first.tables] == ["final_errors", "runs", "flattening"]
    for a, b in zip(first.tables, second.tables):
        pd.testing.assert_frame_equal(a.data, b.data)
    curves = first.figures[0].data
    assert set(curves["split"]) == {"train", "test"} and len(curves) == 2 * 8
    assert "degradation" in first.intro and first.summary.startswith("degradation ")


def test_render_of_a_partial_run_says_so(tiny_run, tmp_path):
    run, _ = tiny_run
    copy = RunDir(tmp_path / "partial")
    shutil.copytree(run.path, copy.path, ignore=shutil.ignore_patterns("checkpoints"))
    runs = copy.read_table("runs")
    copy.write_table(runs[runs["model"] != "resnet14"], "runs")
    copy.update_meta(status="interrupted")
    content = render(copy)
    assert content.headline.startswith(
        "partial (3 of 4 runs finished, status interrupted): "
        "no verdict: resnet-14 has no finished run"
    )
    assert content.verdict is None


@pytest.mark.slow
def test_paper_recipe_on_cifar_shaped_data(tmp_path, monkeypatch):
    """The paper preset's wiring, shortened: step schedule, paper warm-up, augmentation, 3 channels."""
    import torch

    from residuals.data import ImageData

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (96, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (96,), generator=g)  # random labels
    fake = ImageData(
        name="cifar10",
        train_x=x[:64],
        train_y=y[:64],
        test_x=x[64:],
        test_y=y[64:],
        classes=[str(i) for i in range(10)],
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
        augment="crop-flip",
    )
    monkeypatch.setattr("residuals.data.load_dataset", lambda *args, **kwargs: fake)
    cfg = deg.PRESETS["paper"].replace(
        depths=(8, 14),
        variants=("residual",),
        epochs=4,
        batch_size=32,
        val_size=None,
        paper_warmup_from_depth=14,
        probe_batch=16,
    )
    tcfg = cfg.train_config(14, 0, "cpu")
    assert (tcfg.lr, tcfg.schedule, tcfg.warmup, tcfg.augment) == (0.1, "step", "paper", True)
    run = RunDir.create(tmp_path, bench="degradation", dataset="cifar10", config=cfg.to_dict())
    runs = deg.run_sweep(run, cfg, device="cpu", jobs=1, echo=lambda line: None)
    assert sorted(runs["model"]) == ["resnet14", "resnet8"]
    lr = run.read_table("results").groupby("model")["lr"].apply(list)
    # 2 steps per epoch, 8 in all: lr / 10 at iterations 4 and 6 (50% and 75%)
    assert lr["resnet8"] == pytest.approx([0.1, 0.1, 0.01, 0.001])
    # the paper warm-up: lr / 10 while the training error is above 80% (random labels: always)
    assert lr["resnet14"][0] == pytest.approx(0.01)
    assert len(run.read_table("probes")) == 3 + 6


class CountingTrain:
    """Wraps the real trainer: counts its calls and can interrupt or fail a chosen call."""

    def __init__(self, monkeypatch, *, interrupt_call=None, oom_call=None):
        import residuals.train

        self.real = residuals.train.train
        self.calls, self.results = [], []
        self.interrupt_call, self.oom_call = interrupt_call, oom_call
        monkeypatch.setattr(residuals.train, "train", self)

    def __call__(self, model, data, cfg, *, checkpoint_path=None, resume=False, on_epoch=None):
        import torch

        self.calls.append((model.name, resume))
        n = len(self.calls)
        if n == self.oom_call:

            def oom(*args, **kwargs):
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

            model.forward = oom
        if n == self.interrupt_call:

            def interrupt(record):
                on_epoch(record)
                raise KeyboardInterrupt  # Ctrl-C after the first epoch (and its checkpoint)

            result = self.real(
                model, data, cfg, checkpoint_path=checkpoint_path, resume=resume, on_epoch=interrupt
            )
        else:
            result = self.real(
                model, data, cfg, checkpoint_path=checkpoint_path, resume=resume, on_epoch=on_epoch
            )
        self.results.append(result)
        return result


@pytest.mark.slow
def test_ctrl_c_keeps_the_checkpoint_and_resume_continues(tmp_path, monkeypatch):
    args = ["--depths", "8", "--epochs", "2", "--seeds", "1", "--jobs", "1", "--out", tmp_path]
    counting = CountingTrain(monkeypatch, interrupt_call=2)
    result = invoke(*args)
    assert result.exit_code == 130
    run = only_run(tmp_path)
    assert run.meta["status"] == "interrupted"
    resume_cmd = f"residuals bench degradation --resume {run.path}"
    assert f"Continue with: {resume_cmd}" in result.output and "Traceback" not in result.output
    assert run.meta["resume_command"] == resume_cmd
    assert counting.calls == [("plain8", False), ("resnet8", False)]  # plan order: plain first
    assert run.read_table("runs")["model"].tolist() == ["plain8"]  # the finished run is kept
    assert (run.path / "checkpoints" / "resnet8-seed0.pt").is_file()

    counting = CountingTrain(monkeypatch)
    result = invoke("--resume", run.path, "--jobs", "1")
    assert result.exit_code == 0, result.output
    assert (
        "resuming: 1 of 2 runs already finished, 1 continue from their checkpoints, "
        "0 start from scratch"
    ) in result.output
    assert counting.calls == [("resnet8", True)]  # plain8 is not retrained
    assert counting.results[0].resumed_from_epoch == 1  # continued at epoch 2
    assert run.meta["status"] == "complete"
    results = run.read_table("results")
    assert results.groupby("model")["epoch"].apply(list).to_dict() == {
        "plain8": [1, 2],
        "resnet8": [1, 2],
    }
    result = invoke("--resume", run.path)
    assert result.exit_code == 0 and "already complete" in result.output


@pytest.mark.slow
def test_precision_option_reaches_the_trainer_and_is_kept_for_resume(tmp_path, monkeypatch):
    counting = CountingTrain(monkeypatch)
    configs = []
    real = counting.real
    counting.real = lambda model, data, cfg, **kw: (
        configs.append(cfg) or real(model, data, cfg, **kw)
    )
    result = invoke(
        "--depths",
        "8",
        "--variants",
        "residual",
        "--epochs",
        "1",
        "--seeds",
        "1",
        "--jobs",
        "1",
        "--precision",
        "fp32",
        "--out",
        tmp_path,
    )
    assert result.exit_code == 0, result.output
    run = only_run(tmp_path)
    assert [c.amp for c in configs] == [False] and run.meta["config"]["amp"] is False
    assert run.read_table("runs")["precision"].tolist() == ["fp32"]
    assert run.meta["precision"] == "fp32" and "on cpu (fp32)" in result.output
    result = invoke("--resume", run.path, "--precision", "bf16")
    assert result.exit_code != 0 and "drop --precision" in result.output


def test_out_of_memory_is_a_clear_error_that_keeps_finished_runs(tmp_path, monkeypatch):
    CountingTrain(monkeypatch, oom_call=2)
    result = invoke(
        "--depths",
        "8",
        "--epochs",
        "2",
        "--seeds",
        "1",
        "--jobs",
        "1",
        "--batch-size",
        "64",
        "--out",
        tmp_path,
    )
    assert result.exit_code == 1
    assert "out of GPU memory with batch size 64" in result.output
    assert "try a smaller --batch-size, e.g. 32" in result.output
    assert "Traceback" not in result.output
    run = only_run(tmp_path)
    assert run.meta["status"] == "failed" and "out of GPU memory" in run.meta["error"]
    assert run.read_table("runs")["model"].tolist() == ["plain8"]
    assert f"--resume {run.path}" in result.output
    assert "To change an option (such as --batch-size), start a new run" in result.output


# --------------------------------------------------------------------------- bad input
FMNIST_FILE = "train-images-idx3-ubyte.gz"


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--dataset", "imagenet"],
            "unknown dataset 'imagenet'; choose from digits, fashion-mnist, cifar10",
        ),
        (
            ["--depths", "20,21"],
            "Invalid value for --depths: invalid CIFAR ResNet depth 21: depth must be 6n+2",
        ),
        (["--depths", "20,x"], "expected comma-separated integers such as 20,56; got '20,x'"),
        (["--depths", "20,20"], "each depth once"),
        (["--variants", "plain,dense"], "unknown 'dense'; choose from plain, residual"),
        (["--batch-size", "0"], "Invalid value for '--batch-size': 0 is not in the range x>=1"),
        (["--seeds", "0"], "Invalid value for '--seeds': 0 is not in the range x>=1"),
        (["--epochs", "0"], "Invalid value for '--epochs'"),
        (["--jobs", "0"], "Invalid value for '--jobs'"),
        (["--lr", "0"], "Invalid value for '--lr': 0.0 is not in the range x>0"),
        (["--preset", "huge"], "'huge' is not one of 'digits', 'fashion-mnist', 'paper'"),
        (["--warmup", "cosine"], "'cosine' is not one of 'linear', 'paper', 'none'"),
    ],
)
def test_bad_options_fail_before_training_with_a_clear_message(tmp_path, args, message):
    result = invoke(*args, "--out", tmp_path / "reports")
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "reports").exists()  # nothing started, nothing to clean up


def test_an_out_folder_that_cannot_be_created_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = invoke("--depths", "8", "--out", blocker / "reports")
    assert result.exit_code == 2
    assert (
        f"Invalid value for --out: cannot create a run folder under {blocker / 'reports'}"
        in result.output
    )


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path):
    result = invoke("--device", "cuda", "--out", tmp_path)
    assert result.exit_code == 2
    assert "no CUDA GPU is available" in result.output and "--device cpu" in result.output


def test_missing_data_offline_says_where_to_put_the_files(tmp_path):
    data = tmp_path / "data"
    result = invoke("--preset", "fashion-mnist", "--data-dir", data, "--out", tmp_path / "reports")
    assert result.exit_code == 1
    assert "dataset 'fashion-mnist': could not download" in result.output
    assert f"Download them and put them in {data / 'fashion-mnist'}" in result.output
    assert FMNIST_FILE in result.output and "Traceback" not in result.output
    assert not (tmp_path / "reports").exists()


def test_checksum_mismatch_is_a_clear_error(tmp_path):
    data = tmp_path / "data" / "fashion-mnist"
    data.mkdir(parents=True)
    (data / FMNIST_FILE).write_bytes(b"not the official file")
    result = invoke(
        "--preset", "fashion-mnist", "--data-dir", tmp_path / "data", "--out", tmp_path / "reports"
    )
    assert result.exit_code == 1
    assert "checksum mismatch" in result.output and str(data / FMNIST_FILE) in result.output
    assert "Traceback" not in result.output and not (tmp_path / "reports").exists()


def test_resume_errors(tmp_path):
    result = invoke("--resume", tmp_path / "nowhere")
    assert result.exit_code == 2 and "no meta.json" in result.output
    run = RunDir.create(
        tmp_path, bench="degradation", dataset="digits", config=deg.PRESETS["digits"].to_dict()
    )
    result = invoke("--resume", run.path, "--depths", "20,56", "--out", tmp_path)
    assert result.exit_code == 2
    assert (
        "--resume continues a run with its saved configuration; drop --depths, --out"
        in result.output
    )
    other = RunDir.create(tmp_path, bench="boosting", dataset="diabetes", config={})
    result = invoke("--resume", other.path)
    assert result.exit_code == 2 and "is a 'boosting' run, not a degradation run" in result.output


def test_help_lists_presets_and_the_verdict_rule_without_importing_torch():
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from residuals.cli import main\n"
        "r = CliRunner().invoke(main, ['bench', 'degradation', '--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print(r.output)\n"
        "print('HEAVY=' + ','.join(m for m in ('torch', 'sklearn', 'matplotlib') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "HEAVY=\n" in out
    for text in (
        "--preset",
        "fashion-mnist",
        "paper",
        "--resume",
        "--jobs",
        "more than",
        "2 standard errors",
    ):
        assert text in out


@pytest.mark.slow
def test_ctrl_c_in_a_terminal_stops_the_workers_and_resume_finishes(tmp_path):
    """A real SIGINT to the whole process group, as a terminal's Ctrl-C sends it."""
    import os
    import signal
    import time

    cmd = [
        sys.executable,
        "-m",
        "residuals.cli",
        "bench",
        "degradation",
        "--depths",
        "8",
        "--epochs",
        "3",
        "--seeds",
        "1",
        "--jobs",
        "2",
        "--out",
        str(tmp_path),
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    lines = []
    deadline = time.monotonic() + 120
    for line in proc.stdout:  # wait for the first finished epoch
        lines.append(line)
        if "epoch   1/3" in line or time.monotonic() > deadline:
            break
    os.killpg(proc.pid, signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    output = "".join(lines) + rest
    assert proc.returncode == 130, output
    run = only_run(tmp_path)
    assert run.meta["status"] == "interrupted"
    assert f"Continue with: residuals bench degradation --resume {run.path}" in output
    assert "Traceback" not in output
    assert list((run.path / "checkpoints").glob("*.pt"))  # at least one epoch kept

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "residuals.cli",
            "bench",
            "degradation",
            "--resume",
            str(run.path),
            "--jobs",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert run.meta["status"] == "complete"
    assert sorted(run.read_table("runs")["model"]) == ["plain8", "resnet8"]
    assert (run.read_table("runs")["epochs"] == 3).all()


def test_progress_eta_from_measured_speed(monkeypatch):
    cfg = deg.DegradationConfig(depths=(20, 56), seeds=1, train=TrainConfig(epochs=10))
    todo = deg.plan_runs(cfg)
    lines, clock = [], [100.0]
    monkeypatch.setattr(deg.progress.time, "perf_counter", lambda: clock[0])
    progress = deg.Progress(todo, cfg, n_total=len(todo), jobs=2, echo=lines.append)
    assert progress.total_work == 10 * (20 + 20 + 56 + 56)
    rec = {"epoch": 1, "train_error": 0.5, "test_error": 0.5, "images_per_s": 100.0, "seconds": 5.6}
    clock[0] = 130.0
    progress.epoch(todo[0], rec)  # 56 work units in 5.6 s of training, 2 workers busy
    # left: 1520 - 56 = 1464 units at 10 units/s per worker x 2 workers = 73 s
    assert lines[-1].endswith("elapsed 0:30  ETA 1:13")
    clock[0] = 150.0  # 20 s since the first report >= 2 epochs: wall rate
    progress.epoch(todo[1], {**rec, "seconds": 5.0})
    assert lines[-1].endswith("ETA 8:23")  # (1520 - 112) units / (56 units / 20 s) = 503 s
    resumed = deg.Progress(todo, cfg, n_total=len(todo), echo=lines.append)
    resumed.epoch(todo[0], {**rec, "epoch": 4})  # epochs 1-3 came from the checkpoint
    assert resumed.total_work == 1520 - 3 * 56


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_sweep_runs_in_worker_processes(tmp_path):
    # the default on CUDA: several runs at a time (CUDA_JOBS), each in its own process
    result = invoke(
        "--depths", "8", "--epochs", "2", "--seeds", "1", "--device", "cuda", "--out", tmp_path
    )
    assert result.exit_code == 0, result.output
    # "2 runs (...) on cuda (bf16 autocast), 2 at a time": the precision sits between the two
    assert re.search(r"on cuda \([^)]*\), 2 at a time", result.output), result.output
    assert only_run(tmp_path).read_meta()["jobs"] == 2
    runs = only_run(tmp_path).read_table("runs")
    assert (runs["device"] == "cuda").all() and (runs["images_per_s"] > 0).all()


def test_which_errors_are_the_users_to_fix():
    from concurrent.futures.process import BrokenProcessPool

    from residuals.cli_support import user_error
    from residuals.data import DatasetError
    from residuals.train import TrainError

    assert user_error(TrainError("out of GPU memory")) == "out of GPU memory"
    assert user_error(DatasetError("checksum mismatch")) == "checksum mismatch"
    disk_full = OSError(28, "No space left on device")
    assert (
        user_error(disk_full) == "the disk is full (no space left on the device); free some space"
    )
    assert "try fewer --jobs" in user_error(BrokenProcessPool("a child process terminated"))
    assert user_error(KeyError("bug")) is None and user_error(ValueError("bug")) is None


def test_sigterm_during_the_sweep_is_handled_like_ctrl_c():
    import os
    import signal

    from residuals.cli_support import sigterm_as_interrupt

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with sigterm_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs at the next bytecode
    assert signal.getsignal(signal.SIGTERM) is before


def test_default_jobs_and_mps_detection(tmp_path, monkeypatch):
    assert deg.default_jobs("cuda") == deg.CUDA_JOBS == deg.default_jobs("cuda:1")
    assert deg.default_jobs("cpu") >= 1
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(tmp_path))
    assert deg.cuda_mps_running() is False
    (tmp_path / "control").touch()  # the daemon's control pipe
    assert deg.cuda_mps_running() is True
