"""``residuals train`` as a process of its own: stopped by a signal, and one process at a time
in a run folder. What an in-process CliRunner cannot show (signal handlers, a second process)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from residuals.bench.train_cli import train as train_cmd

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_WAIT_POLICY": "PASSIVE"}
# a tiny net on a few digits: an epoch in a fraction of a second
TINY = ["--model", "resnet8", "--dataset", "digits", "--subset", "256", "--batch-size", "64"]
TINY += ["--warmup", "0", "--no-report"]


def train_process(*args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "residuals", "train", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=ENV,
        start_new_session=True,
    )


def only_run(root: Path) -> Path:
    (run,) = [p for p in root.iterdir() if p.is_dir()]
    return run


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stopped_run_prints_a_resume_command_that_continues_it(tmp_path, sig):
    proc = train_process(*TINY, "--epochs", "500", "--checkpoint-every", 3, "--out", tmp_path)
    try:
        for line in proc.stdout:
            if line.startswith("epoch "):
                break
        proc.send_signal(sig)
        rest = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, rest
    assert "Traceback" not in rest
    run = only_run(tmp_path)
    assert json.loads((run / "meta.json").read_text())["status"] == "interrupted"
    printed = [ln.strip() for ln in rest.splitlines() if ln.strip().startswith("residuals train")]
    # with the options that are not the recipe's: the resume keeps checkpointing as often
    assert printed == [f"residuals train --resume {shlex.quote(str(run))} --checkpoint-every 3"]
    done = len(pd.read_csv(run / "results.csv"))

    words = shlex.split(printed[0])[1:]  # the command as printed, with one more epoch
    resumed = subprocess.run(
        [sys.executable, "-m", "residuals", *words, "--epochs", str(done + 1)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"epoch {done + 1}/{done + 1}" in resumed.stdout
    assert json.loads((run / "meta.json").read_text())["status"] == "complete"


def test_a_run_folder_in_use_by_another_process_is_not_resumed(tmp_path):
    assert (
        CliRunner().invoke(train_cmd, [*TINY, "--epochs", "1", "--out", str(tmp_path)]).exit_code
        == 0
    )
    run = only_run(tmp_path)
    before = (run / "meta.json").read_text()
    code = f"from residuals.runs import RunDir; RunDir({str(run)!r}).lock().acquire(); "
    code += "import time; print('locked', flush=True); time.sleep(60)"
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=ENV
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        second = CliRunner().invoke(train_cmd, ["--resume", str(run), "--epochs", "2"])
    finally:
        holder.kill()
        holder.wait()
    assert second.exit_code == 1, second.output
    assert f"in use by PID {holder.pid}" in second.output and "Traceback" not in second.output
    assert (run / "meta.json").read_text() == before  # the second one changed nothing


def test_ctrl_c_while_the_report_is_built_says_the_run_is_complete(tmp_path, monkeypatch):
    def interrupted(run_dir, **_):
        raise KeyboardInterrupt

    monkeypatch.setattr("residuals.report.html.build_report", interrupted)
    args = [a for a in TINY if a != "--no-report"]
    result = CliRunner().invoke(train_cmd, [*args, "--epochs", "1", "--out", str(tmp_path)])
    assert result.exit_code == 130
    run = only_run(tmp_path)
    assert f"Continue with:\n  residuals report build {run}" in result.output
    assert json.loads((run / "meta.json").read_text())["status"] == "complete"
