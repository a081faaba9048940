"""residuals.distributed: torchrun's environment, sharding, and collectives that carry one
rank's error to every rank or time out instead of hanging (2 gloo processes on the CPU)."""

from __future__ import annotations

import datetime
import time
from pathlib import Path

import pytest
import torch
from dist_helpers import spawn

from residuals import distributed
from residuals.distributed import DistributedError


def test_launch_reads_torchruns_environment():
    assert distributed.launch({}) is None
    env = {
        "RANK": "3",
        "WORLD_SIZE": "4",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "2",
        "MASTER_ADDR": "10.0.0.1",
        "MASTER_PORT": "29500",
    }
    assert distributed.launch(env) == distributed.Launch(3, 4, 1, 2)
    with pytest.raises(DistributedError, match="MASTER_PORT"):
        distributed.launch({k: v for k, v in env.items() if k != "MASTER_PORT"})
    with pytest.raises(DistributedError, match="inconsistent"):
        distributed.launch({**env, "RANK": "4"})
    with pytest.raises(DistributedError, match="numeric"):
        distributed.launch({**env, "RANK": "one"})


def test_timeout_from_environment(monkeypatch):
    monkeypatch.delenv(distributed.TIMEOUT_ENV, raising=False)
    assert distributed.timeout().total_seconds() == distributed.DEFAULT_TIMEOUT_S
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "12.5")
    assert distributed.timeout() == datetime.timedelta(seconds=12.5)
    for bad in ("soon", "0", "-3"):
        monkeypatch.setenv(distributed.TIMEOUT_ENV, bad)
        with pytest.raises(DistributedError, match=distributed.TIMEOUT_ENV):
            distributed.timeout()


def test_alone_every_helper_is_the_identity():
    assert (distributed.world_size(), distributed.rank(), distributed.is_rank0()) == (1, 0, True)
    assert distributed.from_rank0(lambda: 7) == 7
    assert distributed.broadcast_object("x") == "x"
    assert distributed.all_gather_object(5) == [5]
    assert distributed.share([1, 2, 3]) == [1, 2, 3]
    assert distributed.local_device("cuda") == "cuda"
    with pytest.raises(ZeroDivisionError):
        distributed.check_all(lambda: 1 / 0)


@pytest.mark.parametrize("n", [0, 1, 2, 5, 64, 67])
@pytest.mark.parametrize("parts", [1, 2, 3, 8])
def test_shards_are_tensor_splits(n, parts):
    want = [len(t) for t in torch.arange(n).tensor_split(parts)]
    got = [distributed.shard_bounds(n, parts, i) for i in range(parts)]
    assert [hi - lo for lo, hi in got] == want
    assert [lo for lo, _ in got] == [sum(want[:i]) for i in range(parts)]
    assert distributed.shard_bounds(n, parts, parts) == (n, n)  # a rank beyond the parts: idle
    assert distributed.shard_sizes(n, parts, parts + 1) == [*want, 0]


def test_share_deals_round_robin():
    items = list(range(7))
    shares = [distributed.share(items, r, 3) for r in range(3)]
    assert shares == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(x for s in shares for x in s) == items
    with pytest.raises(ValueError):
        distributed.share(items, 3, 3)


class Refused(ValueError):
    pass


def _collectives(rank: int, out: str) -> None:
    assert distributed.world_size() == 2 and distributed.rank() == rank
    assert distributed.broadcast_object(f"from {rank}") == "from 0"
    assert distributed.all_gather_object(rank * 10) == [0, 10]
    assert distributed.from_rank0(lambda: f"read by {rank}") == "read by 0"
    assert distributed.share(list(range(5))) == [[0, 2, 4], [1, 3]][rank]

    def fail() -> None:
        raise Refused(f"rank {rank} refused")

    # an error on rank 0 reaches rank 1, with its type and message
    with pytest.raises(Refused, match="rank 0 refused"):
        distributed.from_rank0(fail)

    def fail_on_1() -> None:
        if rank == 1:
            fail()

    with pytest.raises(Refused, match="rank 1 refused"):
        distributed.check_all(fail_on_1)
    Path(out, f"ok{rank}").touch()


@pytest.mark.slow
def test_collectives_carry_errors_to_every_rank(tmp_path):
    spawn(_collectives, 2, str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok0", "ok1"]


def _missing_rank(rank: int, out: str) -> None:
    if rank == 1:
        time.sleep(5)  # never joins the barrier
        return
    t0 = time.perf_counter()
    with pytest.raises(RuntimeError):
        distributed.barrier()
    Path(out, "waited").write_text(f"{time.perf_counter() - t0:.1f}")


@pytest.mark.slow
def test_a_rank_that_never_answers_times_out(tmp_path, monkeypatch):
    monkeypatch.setenv("RESIDUALS_TEST_TIMEOUT", "2")
    spawn(_missing_rank, 2, str(tmp_path))
    assert float((tmp_path / "waited").read_text()) < 4.5  # the 2 s timeout, not rank 1's exit


def test_workers_take_turns_on_every_visible_gpu(monkeypatch):
    import multiprocessing as mp

    from residuals.bench.degradation import sweep
    from residuals.device import spread_devices

    assert spread_devices("cpu") == ["cpu"]
    assert spread_devices("cuda:1") == ["cuda:1"]  # an explicit GPU pins every worker
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert spread_devices("cuda") == ["cuda:0", "cuda:1", "cuda:2"]
    assert sweep.default_jobs("cuda") == 3 * sweep.CUDA_JOBS
    counter, seen = mp.get_context("spawn").Value("i", 0), []
    monkeypatch.setattr(torch.cuda, "set_device", seen.append)
    for _ in range(4):
        sweep._init_worker(None, spread_devices("cuda"), counter)
    assert seen == ["cuda:0", "cuda:1", "cuda:2", "cuda:0"]


def test_ranks_of_a_machine_share_its_cores(monkeypatch):
    from residuals.bench.degradation import sweep

    alone = sweep.default_jobs("cpu")
    for k, v in {
        "RANK": "1",
        "WORLD_SIZE": "4",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "1",
    }.items():
        monkeypatch.setenv(k, v)
    assert sweep.default_jobs("cpu") == max(1, alone // 2)


def test_a_group_is_torn_down_only_after_every_rank_is_done(monkeypatch):
    """On a normal exit the ranks meet at a barrier before the group is destroyed (a gloo
    rank destroyed while its peer still talked to it aborted the peer, now and then); after
    an error they do not wait, since the others may never come; a broken group's failed
    barrier does not hide the finished work."""
    import torch.distributed as dist

    calls: list[str] = []
    monkeypatch.setattr(distributed, "init_from_env", lambda device, backend: True)
    monkeypatch.setattr(distributed, "launch", lambda: None)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda *a: 2)
    monkeypatch.setattr(dist, "barrier", lambda *a, **k: calls.append("barrier"))
    monkeypatch.setattr(dist, "destroy_process_group", lambda *a: calls.append("destroy"))
    with distributed.process_group("cpu"):
        calls.append("work")
    assert calls == ["work", "barrier", "destroy"]
    calls.clear()
    with pytest.raises(ValueError), distributed.process_group("cpu"):
        raise ValueError("a rank failed")
    assert calls == ["destroy"]
    calls.clear()

    def broken(*a, **k):
        raise RuntimeError("Application timeout caused pair closure")

    monkeypatch.setattr(dist, "barrier", broken)
    with distributed.process_group("cpu"):
        calls.append("work")
    assert calls == ["work", "destroy"]
