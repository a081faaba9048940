"""``residuals train``: the command, its run folder and report, resumes, recipes, errors, and
parity with the degradation bench (small nets on the embedded digits)."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from residuals.bench.train import RECIPES, Recipe, get_recipe, parse_warmup
from residuals.bench.train.logs import ProgressBar, epoch_line
from residuals.bench.train_cli import train as train_cmd
from residuals.cli import main
from residuals.train import EpochRecord, StepProgress, TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--model", "resnet8", "--epochs", "2", "--batch-size", "256"]


def invoke(*args, command=train_cmd):
    return CliRunner().invoke(command, [str(a) for a in args])


def only_run(root: Path) -> Path:
    (run,) = [p for p in root.iterdir() if p.is_dir()]
    return run


def test_train_writes_a_run_folder_tables_and_report(tmp_path):
    result = invoke(*TINY, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert sum(line.startswith("epoch ") for line in lines) == 2
    assert "\r" not in result.output  # no progress bar when the output is not a terminal
    run = only_run(tmp_path)
    meta = json.loads((run / "meta.json").read_text())
    assert meta["bench"] == "train" and meta["status"] == "complete"
    assert meta["config"]["model"] == "resnet8" and meta["config"]["train"]["epochs"] == 2
    results = pd.read_csv(run / "results.csv")
    assert list(results["epoch"]) == [1, 2]
    steps = pd.read_csv(run / "steps.csv")
    assert list(steps.columns) == ["iteration", "epoch", "loss", "error", "lr"]
    assert len(steps) == 2 * 6 and list(steps["iteration"]) == list(range(12))
    assert (run / "index.html").is_file() and (run / "checkpoint.pt").is_file()
    assert {p.name for p in (run / "figures").glob("*.png")} == {
        "loss_curves.png",
        "error_curves.png",
        "learning_rate.png",
        "throughput.png",
    }
    listed = CliRunner().invoke(main, ["report", "list", "--root", str(tmp_path)])
    assert listed.exit_code == 0 and "train" in listed.output and run.name in listed.output
    rebuilt = CliRunner().invoke(main, ["report", "build", str(run)])
    assert rebuilt.exit_code == 0, rebuilt.output


def test_resume_with_more_epochs_continues_and_records_the_plans(tmp_path):
    assert invoke(*TINY, "--out", tmp_path).exit_code == 0
    run = only_run(tmp_path)
    result = invoke("--resume", run, "--epochs", "3")
    assert result.exit_code == 0, result.output
    assert "epoch 3/3" in result.output and "epoch 1/3" not in result.output
    meta = json.loads((run / "meta.json").read_text())
    assert [p["epochs"] for p in meta["plans"]] == [2, 3] and meta["plans"][1]["from_epoch"] == 2
    assert meta["config"]["train"]["epochs"] == 3
    assert meta["config"]["train"]["warmup_epochs"] == pytest.approx(2 / 12 * 2)  # unchanged
    assert list(pd.read_csv(run / "results.csv")["epoch"]) == [1, 2, 3]
    assert pd.read_csv(run / "steps.csv")["iteration"].tolist() == list(range(18))

    changed = invoke("--resume", run, "--epochs", "4", "--model", "resnet14", "--lr", "0.2")
    assert changed.exit_code == 1 and "Traceback" not in changed.output
    assert (
        "model: 'resnet8' -> 'resnet14'" in changed.output and "lr: 0.05 -> 0.2" in changed.output
    )
    fewer = invoke("--resume", run, "--epochs", "2")
    assert fewer.exit_code == 1 and "has trained 3 epochs" in fewer.output
    assert json.loads((run / "meta.json").read_text())["status"] == "complete"  # untouched


def test_resume_with_epochs_inside_the_warmup_says_so(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    recipe = RECIPES["default"].with_options(epochs=30)  # its warm-up: 5 epochs
    (run / "meta.json").write_text(json.dumps({"bench": "train", "config": recipe.to_dict()}))
    result = invoke("--resume", run, "--epochs", "4")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "would end within the run's 5-epoch warm-up" in result.output
    assert "warmup='none'" not in result.output  # a resume cannot change the warm-up


def test_resume_refuses_a_bench_folder(tmp_path):
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "meta.json").write_text(json.dumps({"bench": "degradation", "config": {}}))
    result = invoke("--resume", bench)
    assert result.exit_code == 1
    assert "is a run folder of 'degradation', not a training run" in result.output


@pytest.mark.parametrize(
    "args,message,code",
    [
        (["--model", "resnt20"], "Did you mean 'resnet20'", 1),
        (["--resize", "0"], "Invalid value for '--resize'", 2),
        (["--model", "d2l-resnet18"], "cannot take 8x8 images", 1),
        (["--model", "resnet8", "--resize", "2"], "cannot take 2x2 images", 1),
        (["--optimizer", "lbfgs"], "'lbfgs' is not one of 'sgd', 'adam', 'adamw'", 2),
        (["--recipe", "d2l"], "Did you mean 'd2l-resnet18'", 1),
        (["--warmup", "soon"], "warmup must be a number of epochs", 1),
        (["--dataset", "mnist"], "unknown dataset 'mnist'", 1),
    ],
)
def test_bad_input_gets_a_clear_error_without_a_traceback(tmp_path, args, message, code):
    result = invoke(*args, "--out", tmp_path)
    assert result.exit_code == code, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not any(tmp_path.iterdir())  # nothing written


def test_tensorboard_without_the_package_says_how_to_install_it(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_tensorboard(name, *a, **k):
        if name.startswith(("tensorboard", "torch.utils.tensorboard")):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    result = invoke(*TINY, "--tensorboard", tmp_path / "tb", "--out", tmp_path / "runs")
    assert result.exit_code == 1
    assert "pip install 'residuals[tensorboard]'" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "runs").exists()


def test_tensorboard_gets_step_and_epoch_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = invoke(*TINY, "--tensorboard", tmp_path / "tb", "--out", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "epoch/test_error", "epoch/images_per_s"} <= tags
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, 13))
    assert [e.step for e in events.Scalars("epoch/test_error")] == [6, 12]


def test_recipes_set_what_the_articles_set_and_options_override():
    d2l = RECIPES["d2l-resnet18"]
    assert (d2l.model, d2l.dataset, d2l.resize) == ("d2l-resnet18", "fashion-mnist", 96)
    t = d2l.train
    assert (
        t.epochs,
        t.batch_size,
        t.lr,
        t.optimizer,
        t.schedule,
        t.momentum,
        t.weight_decay,
        t.warmup,
        t.augment,
    ) == (10, 256, 0.05, "sgd", "constant", 0.0, 0.0, "none", False)
    tf = RECIPES["tf-preact-elu"]
    assert tf.model == "tf-preact-elu" and tf.train.optimizer == "adam" and tf.train.lr == 1e-3
    short = d2l.with_options(epochs=1, dataset="digits", resize=32)
    assert (short.train.epochs, short.dataset, short.resize, short.train.lr) == (
        1,
        "digits",
        32,
        0.05,
    )
    # the default recipe is the degradation bench's: a linear warm-up keeps its share
    assert get_recipe("default").with_options(epochs=6).train.warmup_epochs == pytest.approx(1.0)
    assert parse_warmup("paper") == {"warmup": "paper", "warmup_epochs": 0.0}
    assert parse_warmup("0") == {"warmup": "none", "warmup_epochs": 0.0}
    assert Recipe.from_dict(d2l.to_dict()) == d2l
    with pytest.raises(ValueError, match="unknown recipe options"):
        d2l.with_options(epoch=3)


@pytest.mark.slow
def test_list_models_and_help_come_from_the_registry_and_recipes():
    result = invoke("--list-models")
    assert result.exit_code == 0
    for name in ("resnet20", "preresnet1001", "d2l-resnet18", "tf-preact-elu"):
        assert name in result.output
    help_text = invoke("--help").output
    assert "d2l-resnet18" in help_text and "tf-preact-elu" in help_text and "--warmup" in help_text
    assert "train" in CliRunner().invoke(main, ["--help"]).output


def test_progress_bar_draws_on_a_terminal_only(monkeypatch):
    import io

    stream = io.StringIO()
    bar = ProgressBar(stream, interval=0.0, enabled=True)
    p = StepProgress(epoch=0, steps=4, loss_sum=torch.tensor(0.0, dtype=torch.float64))
    for step in range(4):
        p.step, p.seen = step, 32 * (step + 1)
        p.loss_sum = torch.tensor(0.5 * p.seen, dtype=torch.float64)
        bar(p)
    out = stream.getvalue()
    assert "4/4" in out and "img/s" in out and "loss 0.5000" in out and "ETA" in out
    bar.clear()
    assert stream.getvalue().endswith("\r\x1b[K")
    assert ProgressBar(io.StringIO()).enabled is False  # not a terminal
    line = epoch_line(EpochRecord(2, 0.41, 0.142, 0.38, 0.131, 0.05, 12.3, 5032.7), 10)
    assert line.startswith("epoch  2/10  loss 0.4100  train err  14.20%")


@pytest.mark.slow
def test_train_matches_the_degradation_bench_for_resnet20(tmp_path):
    """``residuals train --model resnet20 --dataset digits --epochs 12`` trains what the
    degradation bench trains for resnet-20 with its default recipe: the same numbers."""
    from residuals.bench.degradation import PRESETS, RunSpec, train_run

    result = invoke(
        "--model",
        "resnet20",
        "--dataset",
        "digits",
        "--epochs",
        "12",
        "--device",
        "cpu",
        "--no-report",
        "--out",
        tmp_path / "train",
    )
    assert result.exit_code == 0, result.output
    ours = pd.read_csv(only_run(tmp_path / "train") / "results.csv")
    cfg = PRESETS["digits"]
    assert cfg.train.epochs == 12
    bench = train_run(RunSpec("residual", 20, 0), cfg, device="cpu", run_path=tmp_path / "bench")
    cols = ["epoch", "train_loss", "train_error", "test_loss", "test_error", "lr"]
    pd.testing.assert_frame_equal(
        ours[cols],
        bench.history[cols].reset_index(drop=True),
        check_exact=True,
        check_dtype=False,
    )


def test_recipe_train_config_is_the_trainer_config():
    from residuals.bench.degradation import PRESETS

    assert isinstance(RECIPES["default"].train, TrainConfig)
    assert RECIPES["default"].train == PRESETS["digits"].train  # one definition


def test_subset_trains_on_the_first_images_only(tmp_path):
    result = invoke(*TINY, "--subset", "200", "--epochs", "1", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    assert "after 1 epoch;" in result.output  # the headline, in the singular
    run = only_run(tmp_path)
    assert len(pd.read_csv(run / "steps.csv")) == 1  # one batch of 200 per epoch
    assert json.loads((run / "meta.json").read_text())["config"]["subset"] == 200
