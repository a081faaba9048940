"""Multi-process tests on the CPU: ``spawn`` starts ``nprocs`` processes joined in a gloo
process group on 127.0.0.1 (a free port), exactly as ``torchrun`` would describe it in their
environment, each with one torch thread; results come back through files."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
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
    import torch

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
