"""Multi-process tests on the CPU: ``spawn`` starts ``nprocs`` processes joined in a gloo
process group on 127.0.0.1 (a free port), exactly as ``torchrun`` would describe it in their
environment, each with one torch thread; results come back through files. ``run_ranks``
returns each rank's result, or the error it raised, to the test. ``torchrun`` runs a
``residuals`` command under torchrun itself."""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import socket
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.multiprocessing as tmp

TIMEOUT_S = "60"  # any collective that waits longer fails the test instead of hanging it


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_env(rank: int, world: int, port: int) -> dict[str, str]:
    """The variables torchrun sets for one process of a one-machine launch."""
    return {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "RANK": str(rank),
        "WORLD_SIZE": str(world),
        "LOCAL_RANK": str(rank),
        "LOCAL_WORLD_SIZE": str(world),
        "RESIDUALS_DIST_TIMEOUT": os.environ.get("RESIDUALS_TEST_TIMEOUT", TIMEOUT_S),
        "OMP_NUM_THREADS": "1",
    }


def _entry(rank: int, world: int, port: int, fn: Callable[..., Any], args: tuple) -> None:
    import faulthandler

    import torch

    faulthandler.enable()  # a rank killed by a signal prints where it was (every thread)

    os.environ.update(launch_env(rank, world, port))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    torch.set_num_threads(1)
    from residuals import distributed

    with distributed.process_group("cpu"):
        fn(rank, *args)


def spawn(fn: Callable[..., Any], nprocs: int, *args: Any) -> None:
    """Run ``fn(rank, *args)`` in ``nprocs`` ranks of one gloo group; raises if any failed."""
    tmp.start_processes(
        _entry, args=(nprocs, free_port(), fn, args), nprocs=nprocs, join=True, start_method="spawn"
    )


def _rank_main(rank, world, port, group_timeout_s, fn, args, results) -> None:
    import datetime
    import faulthandler

    import torch.distributed as dist

    faulthandler.enable()  # a rank killed by a signal prints where it was (every thread)
    os.environ["OMP_NUM_THREADS"] = "1"
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=group_timeout_s),
    )
    try:
        results.put((rank, "ok", fn(rank, world, *args)))
    except BaseException as e:  # noqa: BLE001 -- reported to the test, which decides
        results.put((rank, "error", (type(e).__name__, str(e), traceback.format_exc())))
    finally:
        dist.destroy_process_group()


def run_ranks(world: int, fn, *args, timeout: float = 120.0, group_timeout_s: float = 60.0):
    """Run ``fn(rank, world, *args)`` on ``world`` gloo ranks and collect what each returns.

    Returns ``[(status, value), ...]`` by rank: ``("ok", fn's result)`` or ``("error",
    (type name, message, traceback))``, so a test can assert that every rank failed
    cleanly. The group's collectives time out after ``group_timeout_s``; the whole run
    after ``timeout`` seconds. ``fn`` must be a module-level function.
    """
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    procs = [
        ctx.Process(
            target=_rank_main,
            args=(r, world, port, group_timeout_s, fn, args, results),
            daemon=True,
        )
        for r in range(world)
    ]
    for p in procs:
        p.start()
    out: dict = {}
    try:
        for _ in range(world):
            rank, status, value = results.get(timeout=timeout)
            out[rank] = (status, value)
    except queue.Empty:
        raise TimeoutError(
            f"{world - len(out)} of {world} ranks did not report within {timeout} s "
            f"(ranks {sorted(out)} did)"
        ) from None
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    return [out[r] for r in range(world)]


def torchrun(args: list[str], nproc: int = 2) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node NPROC -m residuals ARGS`` on 127.0.0.1 with a free port,
    this checkout's ``residuals`` first on the path; fails the test unless it succeeds."""
    import residuals

    root = Path(residuals.__file__).resolve().parents[1]
    env = {
        **os.environ,
        "OMP_WAIT_POLICY": "PASSIVE",
        "RESIDUALS_DIST_TIMEOUT": TIMEOUT_S,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        "-m",
        "residuals",
        *args,
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done
