"""`residuals bench degradation`: the sweep, its tables, verdict, report and command line.

The end-to-end runs use the embedded digits with the smallest nets (depths 8
and 14), one or two epochs and one seed, in this process (``--jobs 1``) so the
trainer can be counted with monkeypatch; one test covers the worker processes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import fields

import pandas as pd
import pytest
from click.testing import CliRunner

from residuals.bench import degradation as deg
from residuals.bench.degradation_cli import degradation as degradation_cmd
from residuals.bench.degradation_report import render
from residuals.report.runs import RunDir

TINY = ["--depths", "8,14", "--epochs", "2", "--seeds", "1", "--jobs", "1"]


def invoke(*args):
    return CliRunner().invoke(degradation_cmd, [str(a) for a in args], catch_exceptions=False)


def only_run(out) -> RunDir:
    runs = [p for p in out.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return RunDir(runs[0])


@pytest.fixture(autouse=True)
def no_user_data(tmp_path, monkeypatch):
    """Keep the user's data cache and the network out of every test."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("RESIDUALS_DATA", raising=False)

    def offline(url, dest, timeout=60.0):
        raise OSError("network is unreachable (test)")

    monkeypatch.setattr("residuals.data.fetch_url", offline)


# --------------------------------------------------------------------------- verdict
def runs_table(errors: dict, *, diverged: dict | None = None) -> pd.DataFrame:
    """A runs.csv: ``errors[(variant, depth)]`` = final train errors (fractions), one per seed."""
    rows = []
    for (variant, depth), errs in errors.items():
        statuses = (diverged or {}).get((variant, depth), [])
        for seed, err in enumerate(errs):
            status = "diverged" if seed in statuses else "complete"
            rows.append({"model": deg.model_label(variant, depth).replace("-", ""), "variant": variant,
                         "depth": depth, "seed": seed, "status": status, "epochs": 10,
                         "final_train_error": err, "final_test_error": err + 0.02,
                         "best_test_error": err + 0.01, "images_per_s": 1000.0, "train_s": 10.0,
                         "wall_s": 11.0, "device": "cpu", "threads": 1})
    return pd.DataFrame(rows)


def test_verdict_reproduced_names_the_numbers():
    runs = runs_table({("plain", 20): [0.001], ("plain", 56): [0.851],
                       ("residual", 20): [0.0], ("residual", 56): [0.001]})
    v = deg.degradation_verdict(runs)
    assert v.reproduced is True
    assert v.headline == ("degradation reproduced: plain-56 training error 85.1% > plain-20 0.1%; "
                          "resnet-56 0.1% <= resnet-20 0.0%")


def test_verdict_uses_seed_means_and_shows_spread():
    runs = runs_table({("plain", 20): [0.0, 0.002], ("plain", 56): [0.6, 0.8],
                       ("residual", 20): [0.0, 0.0], ("residual", 56): [0.0, 0.004]})
    v = deg.degradation_verdict(runs)
    assert v.reproduced is True
    assert "plain-56 training error 70.0% ± 14.1 > plain-20 0.1% ± 0.1" in v.headline
    assert v.headline.endswith("(means over 2 seeds)")


def test_verdict_not_reproduced_when_plain_does_not_degrade():
    runs = runs_table({("plain", 20): [0.01], ("plain", 56): [0.03],
                       ("residual", 20): [0.0], ("residual", 56): [0.0]})
    v = deg.degradation_verdict(runs)
    assert v.reproduced is False
    assert v.headline.startswith("degradation not reproduced (plain-56 is not worse than plain-20 "
                                 "by more than 5 points)")
    assert "3.0% vs plain-20 1.0%" in v.headline


def test_verdict_not_reproduced_when_the_residual_net_also_degrades():
    runs = runs_table({("plain", 20): [0.0], ("plain", 56): [0.8],
                       ("residual", 20): [0.0], ("residual", 56): [0.3]})
    v = deg.degradation_verdict(runs)
    assert v.reproduced is False
    assert "resnet-56 is worse than resnet-20 by more than 1 points" in v.headline
    assert "resnet-56 30.0% > resnet-20 0.0%" in v.headline


def test_verdict_boundaries_are_strict_for_plain_and_inclusive_for_residual():
    at_margin = runs_table({("plain", 20): [0.0], ("plain", 56): [0.05],
                            ("residual", 20): [0.0], ("residual", 56): [0.01]})
    assert deg.degradation_verdict(at_margin).reproduced is False          # 5 points: not > 5
    above = runs_table({("plain", 20): [0.0], ("plain", 56): [0.0501],
                        ("residual", 20): [0.0], ("residual", 56): [0.01]})
    assert deg.degradation_verdict(above).reproduced is True               # residual +1 point: ok


def test_verdict_leaves_diverged_seeds_out_and_says_so():
    runs = runs_table({("plain", 20): [0.0, 0.0], ("plain", 56): [0.9, 0.7],
                       ("residual", 20): [0.0, 0.0], ("residual", 56): [0.0, 0.0]},
                      diverged={("plain", 56): [0]})
    v = deg.degradation_verdict(runs)
    assert v.reproduced is True
    assert "plain-56 training error 70.0% >" in v.headline     # the diverged 90% is not averaged
    assert v.notes == ("plain-56: 1 of 2 seeds diverged (left out of the mean)",)


def test_verdict_is_none_when_every_seed_of_a_cell_diverged():
    runs = runs_table({("plain", 20): [0.0], ("plain", 56): [0.9],
                       ("residual", 20): [0.0], ("residual", 56): [0.0]},
                      diverged={("plain", 56): [0]})
    v = deg.degradation_verdict(runs)
    assert v.reproduced is None
    assert v.headline.startswith("no verdict: every plain-56 run diverged")


@pytest.mark.parametrize("errors, expected", [
    ({("plain", 20): [0.0], ("plain", 56): [0.9]}, "plain at 20, 56"),
    ({("plain", 20): [0.0], ("residual", 20): [0.0]}, "plain, residual at 20"),
])
def test_verdict_needs_both_variants_at_two_depths(errors, expected):
    v = deg.degradation_verdict(runs_table(errors))
    assert v.reproduced is None and expected in v.headline
    assert deg.degradation_verdict(runs_table({})).headline == "no verdict: no run has finished yet"


def test_final_errors_table():
    runs = runs_table({("plain", 20): [0.1, 0.3], ("residual", 20): [0.0, 0.2]},
                      diverged={("residual", 20): [1]})
    fe = deg.final_errors(runs).set_index("model")
    assert fe.loc["plain-20", "train_error_mean"] == pytest.approx(0.2)
    assert fe.loc["plain-20", "train_error_std"] == pytest.approx(0.1414, abs=1e-4)
    assert fe.loc["resnet-20", ["n_seeds", "n_diverged"]].tolist() == [1, 1]


# --------------------------------------------------------------------------- config and plan
def test_presets_and_plan():
    assert set(deg.PRESETS) == {"digits", "fashion-mnist", "paper"}
    default = deg.PRESETS[deg.DEFAULT_PRESET]
    assert default.dataset == "digits" and default.depths == (20, 56)
    paper = deg.PRESETS["paper"]
    assert paper.depths == (20, 32, 44, 56, 110) and paper.lr == 0.1 and paper.batch_size == 128
    assert paper.schedule == "step" and paper.augment and paper.val_size == 5000
    assert paper.warmup_for(56) == "none" and paper.warmup_for(110) == "paper"
    plan = deg.plan_runs(default)
    assert len(plan) == 2 * 2 * default.seeds
    assert [s.depth for s in plan][:2] == [56, 56]          # the longest runs first
    assert plan[0].model in ("plain56", "resnet56") and plan[0].label.endswith("-56")


def test_config_round_trips_through_json():
    cfg = deg.PRESETS["paper"]
    back = deg.DegradationConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg
    with pytest.raises(ValueError, match="unknown keys"):
        deg.DegradationConfig.from_dict({**cfg.to_dict(), "depth": 3})
    with pytest.raises(ValueError, match="choose from plain, residual"):
        deg.DegradationConfig(variants=("plain", "dense"))
