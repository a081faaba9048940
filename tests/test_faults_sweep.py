"""Fault injection on the degradation sweep: corrupted checkpoints and tables, a parent killed
with SIGKILL, two processes in one run folder, a full disk, and a resume under another
``--jobs`` (docs/reliability.md). Each test damages or kills things the way the issue found
them, and failed before its fix."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from residuals.bench import _workers as workers
from residuals.bench import degradation as deg
from residuals.bench.degradation_cli import degradation as degradation_cmd
from residuals.runs import RunDir, RunInUse
from residuals.train import TrainConfig, TrainError, load_checkpoint, train

REPO = Path(__file__).resolve().parents[1]
TINY = ["--depths", "8", "--epochs", "2", "--seeds", "1"]


def invoke(*args):
    return CliRunner().invoke(degradation_cmd, [str(a) for a in args])


def only_run(out) -> RunDir:
    (path,) = [p for p in Path(out).iterdir() if p.is_dir()]
    return RunDir(path)


def sweep_process(*args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_WAIT_POLICY": "PASSIVE"}
    return subprocess.Popen(
        [sys.executable, "-m", "residuals.cli", "bench", "degradation", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )


def wait_for(proc: subprocess.Popen, text: str, timeout: float = 120) -> list[str]:
    lines, deadline = [], time.monotonic() + timeout
    for line in proc.stdout:
        lines.append(line)
        if text in line or time.monotonic() > deadline:
            break
    assert any(text in ln for ln in lines), "".join(lines)
    return lines


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished tiny sweep (in this process), copied by the tests that damage it."""
    out = tmp_path_factory.mktemp("finished")
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # as a 2-core machine runs --jobs 1: two data-parallel replicas
    try:
        result = CliRunner().invoke(
            degradation_cmd,
            ["--depths", "8,14", "--epochs", "2", "--seeds", "1", "--jobs", "1", "--out", str(out)],
        )
    finally:
        torch.set_num_threads(before)
    assert result.exit_code == 0, result.output
    return only_run(out)


def copy_unfinished(run: RunDir, dest: Path, *, keep: int) -> RunDir:
    """A copy of ``run`` as a sweep killed after ``keep`` finished runs would leave it."""
    import shutil

    shutil.copytree(run.path, dest)
    copy = RunDir(dest)
    runs = copy.read_table("runs").sort_values(["variant", "depth", "seed"], ignore_index=True)
    kept = runs.head(keep)
    for name in ("results", "probes"):
        df = copy.read_table(name).merge(kept[["variant", "depth", "seed"]])
        copy.write_table(df, name)
    copy.write_table(kept, "runs")
    copy.update_meta(status="interrupted")
    return copy


# ------------------------------------------------------------------- bug 2: checkpoints
def test_a_checkpoint_with_bytes_overwritten_is_refused_by_name(tmp_path, digits):
    from torch import nn

    path = tmp_path / "run.pt"
    cfg = TrainConfig(epochs=1, lr=0.05, warmup="none", replicas=1)
    train(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), digits, cfg, checkpoint_path=path)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(16)  # 16 bytes inside a tensor
    path.write_bytes(bytes(data))
    with pytest.raises(TrainError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and "checksum" in message
    assert "Delete it, and that run starts over" in message


def test_a_sweep_refuses_a_corrupt_checkpoint_and_says_which(finished, tmp_path):
    run = copy_unfinished(finished, tmp_path / "run", keep=3)
    (spec,) = [
        s
        for s in deg.plan_runs(deg.DegradationConfig.from_dict(run.meta["config"]))
        if (s.variant, s.depth, s.seed) not in deg.finished_runs(run)
    ]
    ckpt = deg.checkpoint_path(run.path, spec)
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 16] = b"\xff" * 16
    ckpt.write_bytes(bytes(data))
    result = invoke("--resume", run.path, "--jobs", "1")
    assert result.exit_code == 1, result.output
    assert f"checkpoint {ckpt} is damaged" in result.output
    assert "Delete it, and that run starts over" in result.output
    assert run.read_meta()["status"] == "failed"
    ckpt.unlink()  # as the message says: that run starts over, and the sweep completes
    again = invoke("--resume", run.path, "--jobs", "1")
    assert again.exit_code == 0, again.output
    assert len(run.read_table("runs")) == 4


@pytest.mark.parametrize(
    "content, words",
    [(b"", "the file is empty (0 bytes)"), (b"PK\x03\x04", "cannot read checkpoint")],
)
def test_an_empty_or_cut_checkpoint_names_its_cause(tmp_path, content, words):
    path = tmp_path / "run.pt"
    path.write_bytes(content)
    with pytest.raises(TrainError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert words in message and ": ." not in message and "Delete it" in message


def test_a_refused_pickle_never_suggests_weights_only_false(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo should never run",))

    path = tmp_path / "run.pt"
    torch.save({"format": 1, "x": Payload()}, path)
    with pytest.raises(TrainError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "weights_only" not in message and "never loaded" in message
    assert "system" in message and str(path) in message


# ------------------------------------------------------------------- bug 2: tables
def test_a_results_table_cut_mid_row_stops_the_resume(finished, tmp_path):
    run = copy_unfinished(finished, tmp_path / "run", keep=3)
    text = run.table_path("results").read_text()
    run.table_path("results").write_text(text[: len(text) - 40])  # cut inside the last row
    result = invoke("--resume", run.path, "--jobs", "1")
    assert result.exit_code == 1, result.output
    assert "results.csv" in result.output and "Traceback" not in result.output
    assert len(run.read_table("runs")) == 3  # nothing trained, nothing rewritten
    page = CliRunner().invoke(
        __import__("residuals.cli", fromlist=["main"]).main, ["report", "build", str(run.path)]
    )
    assert page.exit_code == 1 and "results.csv" in page.output  # no report from part of it


def test_a_half_written_runs_row_is_not_a_finished_run(finished, tmp_path):
    run = copy_unfinished(finished, tmp_path / "run", keep=3)
    lines = run.table_path("runs").read_text().splitlines()
    run.table_path("runs").write_text("\n".join([*lines, lines[-1][:20]]) + "\n")
    result = invoke("--resume", run.path, "--jobs", "1")
    assert result.exit_code == 1, result.output
    assert "runs.csv has incomplete rows (line 5)" in result.output


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda t: t.drop(columns=["status"]), "runs.csv lacks the column(s) status"),
        (lambda t: t.assign(epochs=5), "not exactly their epochs"),
        (lambda t: pd.concat([t, t.head(1)]), "more than once"),
        (lambda t: t.assign(status="done"), "status other than"),
    ],
)
def test_a_runs_table_that_disagrees_is_a_clear_error(finished, tmp_path, damage, words):
    run = copy_unfinished(finished, tmp_path / "run", keep=3)
    run.write_table(damage(run.read_table("runs")), "runs")
    result = invoke("--resume", run.path, "--jobs", "1")
    assert result.exit_code in (1, 2) and words in result.output, result.output


# ------------------------------------------------------------------- bug 3: orphaned workers
def children_of(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_workers_die_with_a_parent_killed_by_sigkill(tmp_path):
    proc = sweep_process(
        "--depths", "8,14", "--epochs", "50", "--seeds", "1", "--jobs", "2", "--out", tmp_path
    )
    try:
        wait_for(proc, "epoch   1/50")
        workers = [p for p in children_of(proc.pid) if "spawn_main" in _cmdline(p)]
        assert len(workers) == 2, [_cmdline(p) for p in children_of(proc.pid)]
        os.kill(proc.pid, signal.SIGKILL)  # as the OOM killer does
        proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while any(alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(alive(w) for w in workers), "workers outlived their parent"
    finally:
        for pid in [proc.pid, *children_of(proc.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.stdout.close()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _child_that_watches(parent_ready, parent):
    workers.die_with_parent(parent)
    parent_ready.set()
    time.sleep(60)


def test_the_parent_watch_kills_an_orphan_where_prctl_is_missing(monkeypatch):
    """The fallback alone (as on macOS): a worker whose parent is gone exits within seconds."""
    monkeypatch.setattr(workers.sys, "platform", "darwin")
    monkeypatch.setattr(workers, "PARENT_POLL_S", 0.1)
    ctx = mp.get_context("fork")
    middle_done = ctx.Event()

    def middle():  # a parent that starts a worker and dies at once, unannounced
        ready = ctx.Event()
        worker = ctx.Process(target=_child_that_watches, args=(ready, os.getpid()))
        worker.start()
        ready.wait(10)
        with open(os.environ["FAULTS_PID_FILE"], "w") as f:
            f.write(str(worker.pid))
        middle_done.set()
        os._exit(0)

    pid_file = Path(os.environ.get("TMPDIR", "/tmp")) / f"faults-watch-{os.getpid()}"
    monkeypatch.setenv("FAULTS_PID_FILE", str(pid_file))
    m = ctx.Process(target=middle)
    m.start()
    assert middle_done.wait(20)
    m.join(10)
    worker = int(pid_file.read_text())
    pid_file.unlink()
    deadline = time.monotonic() + 5
    while _pid_exists(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _pid_exists(worker), "the orphan kept running"


def _pid_exists(pid: int) -> bool:
    if Path("/proc").exists():
        return alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# ------------------------------------------------------------------- bug 4: concurrent use
@pytest.mark.slow
def test_a_second_resume_of_a_folder_in_use_stops_at_once(tmp_path):
    holder = sweep_process(
        "--depths", "8", "--epochs", "40", "--seeds", "1", "--jobs", "1", "--out", tmp_path
    )
    try:
        wait_for(holder, "epoch   1/40")
        run = only_run(tmp_path)
        second = invoke("--resume", run.path, "--jobs", "1")
        assert second.exit_code == 1, second.output
        assert f"in use by PID {holder.pid}" in second.output
        assert run.read_meta()["status"] == "running"  # the second one changed nothing
    finally:
        holder.send_signal(signal.SIGTERM)  # stopped like Ctrl-C: checkpoints kept
        holder.communicate(timeout=120)
    assert holder.returncode == 130
    assert run.read_meta()["status"] == "interrupted"


def test_the_lock_goes_with_a_killed_holder(tmp_path):
    run = RunDir.create(tmp_path, "degradation", "digits", {})
    code = f"from residuals.runs import RunDir; RunDir({str(run.path)!r}).lock().acquire(); "
    code += "import sys, time; print('locked', flush=True); time.sleep(60)"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunInUse, match=f"in use by PID {holder.pid}"):
            run.lock().acquire()
        (run.path / ".results.csv.999.1.abc.tmp").write_text("half")  # its unfinished write
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    with run.lock():  # kill -9 released it; the stale temporary is cleaned up
        assert not (run.path / ".results.csv.999.1.abc.tmp").exists()


def _write_tables(path: str, n: int, errors) -> None:
    run = RunDir(path)
    df = pd.DataFrame({"a": range(50)})
    for _ in range(n):
        try:
            run.write_table(df, "results")
            run.write_meta({"bench": "x", "n": 1})
        except OSError as e:
            errors.put(repr(e))


def test_two_writers_never_collide_on_temporary_names(tmp_path):
    run = RunDir.create(tmp_path, "x", "y", {})
    ctx = mp.get_context("fork")
    errors = ctx.Queue()
    procs = [ctx.Process(target=_write_tables, args=(str(run.path), 300, errors)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert not found, found[:3]
    assert len(run.read_table("results")) == 50 and json.loads(run.meta_path.read_text())


@pytest.mark.slow
def test_parallel_creates_get_distinct_folders(tmp_path):
    """Rounds of 30 creations of one name released at once (threads: the GIL is let go
    around each system call, so checking a name and then making it is a window others get
    into; before the fix about one creation in 30 failed)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    for round_ in range(8):
        root = tmp_path / str(round_)
        start = threading.Barrier(30)

        def create(root=root, start=start) -> str:
            start.wait(30)
            return str(RunDir.create(root, "degradation", "digits", {}, name="same").path)

        with ThreadPoolExecutor(30) as pool:
            futures = [pool.submit(create) for _ in range(30)]
        paths = [f.result() for f in futures]  # re-raises a creation that failed
        assert len(set(paths)) == 30


# ------------------------------------------------------------------- bug 5: a full disk
@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_while_checkpointing_says_so_and_how_to_go_on(tmp_path, monkeypatch):
    """Checkpoint writes go to /dev/full, whose writes fail with ENOSPC like a full disk's."""
    from residuals.runs import atomic

    real_open = os.open

    def full_disk_for_checkpoints(path, flags, mode=0o777, **kw):
        if str(path).endswith(".tmp") and ".pt." in Path(path).name:
            return real_open("/dev/full", os.O_WRONLY)
        return real_open(path, flags, mode, **kw)

    monkeypatch.setattr(atomic.os, "open", full_disk_for_checkpoints)
    result = invoke(*TINY, "--jobs", "1", "--out", tmp_path)
    assert result.exit_code == 1, result.output
    assert "the disk is full" in result.output and "--resume" in result.output
    assert "enforce fail" not in result.output and "Traceback" not in result.output
    assert only_run(tmp_path).read_meta()["status"] == "failed"


# ------------------------------------------------------------------- bug 9: --jobs on resume
@pytest.mark.slow
def test_a_resume_under_other_jobs_trains_the_same_nets(finished, tmp_path):
    cfg = deg.DegradationConfig.from_dict(finished.read_meta()["config"])
    assert cfg.train.replicas is not None and cfg.train.amp is not None  # fixed at the start
    run = copy_unfinished(finished, tmp_path / "run", keep=2)
    for ckpt in (run.path / "checkpoints").glob("*.pt"):  # the rest start from scratch
        if not any(ckpt.name.startswith(m) for m in run.read_table("runs")["model"]):
            ckpt.unlink()
    result = invoke("--resume", run.path, "--jobs", "2")
    assert result.exit_code == 0, result.output
    cols = ["variant", "depth", "seed", "final_train_error", "final_test_error", "replicas"]
    got = run.read_table("runs")[cols].sort_values(cols[:3], ignore_index=True)
    want = finished.read_table("runs")[cols].sort_values(cols[:3], ignore_index=True)
    pd.testing.assert_frame_equal(got, want)
