"""The degradation sweep over 2 torchrun ranks (gloo, CPU): the tables equal a one-process
sweep's, and a resume with another number of ranks finishes what a sweep left."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from dist_helpers import spawn, torchrun

from residuals.bench import degradation as deg
from residuals.bench.degradation.config import RESULT_TABLES, RUN_KEYS
from residuals.runs import RunDir

TIMING = {"seconds", "images_per_s", "train_s", "wall_s"}
SWEEP = "--dataset digits --depths 8 --seeds 1 --epochs 1 --device cpu --jobs 1".split()


def tables(path: Path) -> dict[str, pd.DataFrame]:
    run = RunDir(path)
    out = {}
    for name in RESULT_TABLES:
        df = run.read_table(name)
        out[name] = df.drop(columns=[c for c in df.columns if c in TIMING]).sort_values(
            [c for c in [*RUN_KEYS, "epoch", "block"] if c in df.columns], ignore_index=True
        )
    return out


def only_folder(root: Path) -> Path:
    (folder,) = [p for p in root.iterdir() if p.is_dir()]
    return folder


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The same sweep in one process, one thread (torchrun gives each rank one thread)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = deg.configure("digits", depths=(8,), seeds=1, epochs=1)
        out = tmp_path_factory.mktemp("one")
        result = deg.run(cfg, out=out, device="cpu", jobs=1, html=False, echo=lambda _: None)
    finally:
        torch.set_num_threads(before)
    return result.run.path


@pytest.mark.slow
def test_two_ranks_write_the_tables_of_one_process(tmp_path, one_process):
    done = torchrun(["bench", "degradation", *SWEEP, "--out", str(tmp_path)])
    folder = only_folder(tmp_path)
    meta = RunDir(folder).read_meta()
    assert meta["status"] == "complete" and meta["ranks"] == 2
    assert "[rank 1/2]" in done.stdout  # rank 1 trained its share and said so
    assert (folder / "index.html").is_file()
    want, got = tables(one_process), tables(folder)
    for name in RESULT_TABLES:
        pd.testing.assert_frame_equal(got[name], want[name], check_exact=True, obj=name)


def _resume(rank: int, folder: str) -> None:
    from residuals.runs import RunInUse, RunLock

    def under_rank0s_hold(run: RunDir) -> None:  # every rank, once the folder is open
        if rank == 1:  # rank 0 holds the lock while the other ranks work in the folder
            with pytest.raises(RunInUse):
                RunLock(run.path).acquire()

    result = deg.run(
        resume=folder, jobs=1, html=False, echo=lambda _: None, started=under_rank0s_hold
    )
    assert len(result.runs) == 2  # every rank returns the whole table


@pytest.mark.slow
def test_resume_with_two_ranks_finishes_a_sweep(tmp_path, one_process):
    """A sweep stopped with one run finished but not recorded (its rank died before sending
    it) and one never started: two ranks finish it, with the one-process tables."""
    folder = tmp_path / "run"
    import shutil

    shutil.copytree(one_process, folder)
    run = RunDir(folder)
    recorded = run.read_table("runs")
    lost, fresh = recorded["model"].tolist()  # plain8 and resnet8, in sorted order
    for name in RESULT_TABLES:
        df = run.read_table(name)
        run.write_table(df[df["model"] == "none"] if name != "runs" else df.iloc[:0], name)
    (folder / "checkpoints" / f"{fresh}-seed0.pt").unlink()  # trains again from scratch
    assert (folder / "checkpoints" / f"{lost}-seed0.pt").is_file()  # finished, unrecorded
    run.update_meta(status="interrupted")
    spawn(_resume, 2, str(folder))
    assert run.read_meta()["status"] == "complete"
    want, got = tables(one_process), tables(folder)
    for name in RESULT_TABLES:
        pd.testing.assert_frame_equal(got[name], want[name], check_exact=True, obj=name)


def _in_use(rank: int, folder: str) -> None:
    from residuals.runs import RunInUse

    with pytest.raises(RunInUse, match="in use by"):  # raised on rank 0, carried to rank 1
        deg.run(resume=folder, jobs=1, html=False, echo=lambda _: None)


@pytest.mark.slow
def test_a_folder_another_job_holds_stops_every_rank(tmp_path, one_process):
    """Rank 0 takes the run folder's lock for the whole job (the other ranks never do: they
    would find it held); a folder that another process holds stops both ranks at once."""
    import shutil

    from residuals.runs import RunLock

    folder = tmp_path / "run"
    shutil.copytree(one_process, folder)
    RunDir(folder).update_meta(status="interrupted")
    with RunLock(folder):
        spawn(_in_use, 2, str(folder))
