"""Both benches as library calls, and the options their commands share."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner
from test_bench_degradation import no_user_data, only_run  # noqa: F401  (an autouse fixture)

from residuals.bench import boosting, degradation
from residuals.cli import main


@pytest.fixture(autouse=True)
def no_reports_env(monkeypatch):
    monkeypatch.delenv("RESIDUALS_REPORTS", raising=False)


def test_degradation_run_is_a_library_call(tmp_path):
    cfg = degradation.configure("digits", depths=(8,), variants=("residual",), seeds=1, epochs=1)
    lines: list[str] = []
    result = degradation.run(cfg, out=tmp_path, device="cpu", jobs=1, echo=lines.append, html=False)
    assert result.run.read_meta()["status"] == "complete"
    assert result.verdict.reproduced is None  # one depth: the rule cannot compare
    assert list(result.runs["model"]) == ["resnet8"] and result.report is None
    assert result.device == "cpu" and result.jobs == 1 and result.precision
    assert any(line.startswith("run folder: ") for line in lines)
    again = degradation.run(resume=result.run.path, echo=lines.append)  # complete: returned
    assert again.already_complete and again.verdict.headline == result.verdict.headline


def test_degradation_run_refuses_a_bad_sweep_before_making_a_folder(tmp_path):
    with pytest.raises(degradation.SweepError, match="6n") as e:
        degradation.run(degradation.configure("digits", depths=(9,)), out=tmp_path, device="cpu")
    assert e.value.option == "depths" and not any(tmp_path.iterdir())


def test_boosting_run_is_a_library_call_and_resumes(tmp_path):
    cfg = boosting.PRESETS["quick"].replace(
        datasets=("diabetes", "wine"),
        losses=("squared_error", "log_loss"),
        methods=("sklearn-gbrt",),
        n_estimators=3,
    )
    result = boosting.run(cfg, out=tmp_path, device="cpu", name="lib", html=False)
    assert result.run.read_meta()["status"] == "complete" and result.headline
    assert (
        boosting.run_label(cfg) == "custom"
        and boosting.run_label(boosting.PRESETS["full"]) == "full"
    )
    results = result.run.read_table("results")
    assert sorted(results["dataset"]) == ["diabetes", "wine"]
    # a run stopped after its first case: resume measures only the second
    results[results["dataset"] == "diabetes"].to_csv(result.run.table_path("results"), index=False)
    seen: list[str] = []
    again = boosting.run(
        resume=result.run.path, html=False, progress=lambda kind, msg: seen.append(msg)
    )
    assert "resuming: 1 of 2 cases already done" in seen[0]
    assert not any("diabetes" in m for m in seen[1:] if m.startswith("["))
    assert sorted(again.run.read_table("results")["dataset"]) == ["diabetes", "wine"]


@pytest.mark.slow
def test_boosting_jobs_measure_cases_in_workers_and_keep_their_order(tmp_path):
    cfg = boosting.PRESETS["quick"].replace(
        datasets=("diabetes", "wine", "breast_cancer"), methods=("sklearn-gbrt",), n_estimators=2
    )
    one = boosting.run(cfg, out=tmp_path, device="cpu", name="one", html=False)
    two = boosting.run(cfg, out=tmp_path, device="cpu", name="two", jobs=2, html=False)
    a, b = one.run.read_table("staged"), two.run.read_table("staged")
    assert a.equals(b)  # same rows, same order, same numbers


def test_commands_share_out_env_and_the_lr_alias(tmp_path, monkeypatch):
    monkeypatch.setenv("RESIDUALS_REPORTS", str(tmp_path / "deg"))
    res = CliRunner().invoke(
        main,
        [
            "bench",
            "degradation",
            "--depths",
            "8",
            "--variants",
            "residual",
            "--epochs",
            "1",
            "--seeds",
            "1",
            "--seed",
            "3",
            "--learning-rate",
            "0.02",
            "--device",
            "cpu",
            "--jobs",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    run = only_run(tmp_path / "deg")
    config = run.read_meta()["config"]
    assert config["lr"] == 0.02 and config["first_seed"] == 3
    assert run.read_table("runs")["seed"].tolist() == [3]

    monkeypatch.setenv("RESIDUALS_REPORTS", str(tmp_path / "boost"))
    res = CliRunner().invoke(
        main,
        [
            "bench",
            "boosting",
            "--datasets",
            "diabetes",
            "--methods",
            "sklearn-gbrt",
            "--n-estimators",
            "2",
            "--learning-rate",
            "0.3",
            "--no-html",
        ],
    )
    assert res.exit_code == 0, res.output
    assert only_run(tmp_path / "boost").read_meta()["config"]["learning_rate"] == 0.3

    for bench in ("degradation", "boosting"):
        res = CliRunner().invoke(main, ["bench", bench, "--lr", "0.1", "--learning-rate", "0.2"])
        assert res.exit_code == 2 and "another name for --lr" in res.output
        text = CliRunner().invoke(main, ["bench", bench, "--help"]).output
        assert "--lr" in text and "--learning-rate" not in text  # the alias is hidden
        for option in ("--device", "--out", "--seed", "--jobs", "RESIDUALS_REPORTS"):
            assert option in text
        assert "[default: auto]" in " ".join(text.split()) or "default: auto" in text


def test_packages_load_their_modules_on_first_use():
    code = (
        "import sys\n"
        "import residuals.train, residuals.data, residuals.bench.degradation\n"
        "from residuals.train import TrainConfig\n"
        "from residuals.bench.degradation import PRESETS\n"
        "print(','.join(m for m in ('torch', 'pandas') if m in sys.modules))\n"
        "from residuals.train import train\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert out[0] == "" and out[1] == "True"
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        degradation.nothing  # noqa: B018
