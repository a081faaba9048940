"""Fused jobs in the degradation sweep: the planner, ``--fuse``, per-run tables, exact resume."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from residuals.bench import degradation as deg
from residuals.bench.degradation.fusion import MEMORY_FRACTION, member_bytes
from residuals.bench.degradation_cli import degradation as degradation_cmd
from residuals.runs import RunDir

TINY = deg.configure("digits", depths=(8, 14), seeds=3, epochs=2, amp=False)


def test_plan_groups_each_depth_and_sizes_jobs_by_memory():
    specs = deg.plan_runs(TINY)
    alone = deg.plan_jobs(specs, TINY, fuse=False)
    assert [j.specs for j in alone] == [(s,) for s in specs]
    jobs = deg.plan_jobs(specs, TINY, fuse=True)
    assert [(j.depth, len(j.specs)) for j in jobs] == [(14, 6), (8, 6)]  # the costliest first
    assert {s.variant for s in jobs[0].specs} == {"plain", "residual"}
    assert [j.name for j in jobs] == ["job00", "job01"]
    need = member_bytes(14, (3, 32, 32), 10, TINY.train.batch_size, amp=False)
    room = int(4.5 * need / MEMORY_FRACTION)  # four depth-14 members fit, not five
    sized = deg.plan_jobs(specs, TINY, fuse=True, amp=False, memory_bytes=room)
    assert [len(j.specs) for j in sized if j.depth == 14] == [3, 3]  # equal shares of <= 4
    assert max(len(j.specs) for j in sized if j.depth == 8) <= 6
    shared = deg.plan_jobs(specs, TINY, fuse=True, amp=False, memory_bytes=room, concurrent=4)
    assert all(len(j.specs) == 1 for j in shared if j.depth == 14)  # 1/4 of it each
    assert sorted(s for j in sized for s in j.specs) == sorted(specs)


def test_member_bytes_grows_with_depth_batch_and_precision():
    small = member_bytes(8, (1, 28, 28), 10, 128, amp=True)
    assert member_bytes(20, (1, 28, 28), 10, 128, amp=True) > small
    assert member_bytes(8, (1, 28, 28), 10, 256, amp=True) > 1.9 * small
    assert member_bytes(8, (1, 28, 28), 10, 128, amp=False) > 1.9 * small


def test_resolve_fuse():
    from residuals.train.fused import FUSE_CPU

    assert deg.resolve_fuse("on", "cpu") and not deg.resolve_fuse("off", "cuda")
    assert deg.resolve_fuse("auto", "cuda:0") and deg.resolve_fuse("auto", "cpu") == FUSE_CPU
    with pytest.raises(ValueError, match="fuse must be"):
        deg.resolve_fuse("sometimes", "cpu")


@pytest.mark.slow
def test_cli_fuse_on_keeps_per_run_tables_and_names_the_job(tmp_path):
    args = ["--depths", "8", "--epochs", "1", "--seeds", "2", "--precision", "fp32", "--jobs", "1"]
    runner = CliRunner()
    fused = runner.invoke(
        degradation_cmd,
        [*args, "--fuse", "on", "--out", str(tmp_path / "f")],
        catch_exceptions=False,
    )
    assert fused.exit_code == 0, fused.output
    assert "4 runs in 1 fused jobs of 4 members" in fused.output
    alone = runner.invoke(
        degradation_cmd,
        [*args, "--fuse", "off", "--out", str(tmp_path / "a")],
        catch_exceptions=False,
    )
    assert alone.exit_code == 0, alone.output
    (f_run,), (a_run,) = (
        [RunDir(p) for p in (tmp_path / d).iterdir() if p.is_dir()] for d in ("f", "a")
    )
    assert f_run.meta["fuse"] is True and a_run.meta["fuse"] is False
    f_runs, a_runs = f_run.read_table("runs"), a_run.read_table("runs")
    assert (
        len(f_runs) == 4 and set(f_runs["job"]) == {"job00"} and set(f_runs["job_members"]) == {4}
    )
    assert a_runs["job"].nunique() == 4 and set(a_runs["job_members"]) == {1}
    assert len(f_run.read_table("results")) == 4 and len(f_run.read_table("probes")) == len(
        a_run.read_table("probes")
    )
    # fp32, one epoch: the same training to within float rounding
    diff = (f_runs["final_train_error"] - a_runs["final_train_error"]).abs().max()
    assert diff < 0.01, (f_runs, a_runs)


@pytest.mark.slow
def test_an_interrupted_fused_sweep_resumes_exactly(tmp_path, monkeypatch):
    from residuals.train import fused_loop

    cfg = TINY.replace(depths=(8,), seeds=2)
    straight = RunDir.create(
        tmp_path, bench="degradation", dataset=cfg.dataset, config=cfg.to_dict(), name="straight"
    )
    deg.run_sweep(straight, cfg, device="cpu", fuse=True, echo=lambda s: None)
    stopped = RunDir.create(
        tmp_path, bench="degradation", dataset=cfg.dataset, config=cfg.to_dict(), name="stopped"
    )
    real_save = fused_loop.save_checkpoint
    saved = []

    def save_then_stop(state, path):
        real_save(state, path)
        saved.append(path)
        if len(saved) == 4:  # every member's epoch 1 is saved
            raise KeyboardInterrupt

    monkeypatch.setattr(fused_loop, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        deg.run_sweep(stopped, cfg, device="cpu", fuse=True, echo=lambda s: None)
    monkeypatch.setattr(fused_loop, "save_checkpoint", real_save)
    assert not stopped.has_table("runs")
    lines = []
    deg.run_sweep(stopped, cfg, device="cpu", fuse=True, echo=lines.append)
    assert "4 continue from their checkpoints" in lines[0]
    keys = ["model", "seed", "epoch", "train_loss", "train_error", "test_loss", "test_error"]
    a, b = (r.read_table("results")[keys] for r in (straight, stopped))
    assert a.equals(b)  # bit for bit, on the CPU
