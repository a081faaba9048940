"""Fit time of the distributed hist booster at 1, 2, ... gloo ranks on one machine.

Each case fits ``BoostingRegressor(tree_method="hist", distributed=True)`` on
``--rows`` x ``--features`` rows (``make_friedman1``-like data, noise 1.0,
generated once and kept as ``.npy`` for the workers) split into ``--ranks``
equal shards, one process per rank, one thread each (``OMP_NUM_THREADS=1``,
``torch.set_num_threads(1)``): ``r`` ranks use ``r`` cores, so the speed-up is
what adding machines buys, on one.

How it is measured:

* every case starts its ranks afresh (processes, gloo group on 127.0.0.1), and
  each rank makes one untimed warm-up fit of 2 trees on its first 2,000 rows
  (lazy imports, allocator pools); the timed fit is the whole ``fit`` -- input
  agreement, the gathers for the bin edges and the start of the model, every tree
  -- between two barriers, as rank 0's ``time.perf_counter``;
* ``--repeats`` rounds, each running every rank count once, in turn, so load that
  drifts meets them all; reported: the median fit time with min-max;
* ``--cores``: pin rank ``r`` to core ``cores[r % len(cores)]``
  (``os.sched_setaffinity``); on a quiet many-core machine, ``--cores 0,1``;
* rank 0 also records how many collectives the timed fit made and how long it
  waited in them (the rest is its own work), and the case the least time any rank
  waited: about rank 0's when the time goes to the transfers themselves, near zero
  when rank 0 waits for a slower rank;
* each case also records a hash of the model's predictions on 1,000 probe rows:
  every rank count must give the same (the bit-for-bit claim at this size).

Run it::

    python benchmarks/boosting_distributed.py                   # 1M x 20, ranks 1 and 2
    python benchmarks/boosting_distributed.py --rows 20000 --n-estimators 5 --repeats 1

The goal (issue 17): 2 ranks at least 1.6x faster than 1 rank on 1M x 20.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

GOAL_SPEEDUP = 1.6


@dataclass
class Config:
    rows: int = 1_000_000
    features: int = 20
    ranks: list[int] = field(default_factory=lambda: [1, 2])
    n_estimators: int = 50
    max_depth: int = 6
    repeats: int = 3
    cores: list[int] | None = None
    timeout: float = 900.0
    out: str = "benchmarks/results/boosting-distributed"


def make_data(rows: int, features: int, folder: Path) -> None:
    """Friedman #1 on the first 5 features, the rest noise features; saved as .npy."""
    rng = np.random.RandomState(0)
    X = rng.uniform(size=(rows, features))
    y = (
        10 * np.sin(np.pi * X[:, 0] * X[:, 1])
        + 20 * (X[:, 2] - 0.5) ** 2
        + 10 * X[:, 3]
        + 5 * X[:, 4]
        + rng.normal(size=rows)
    )
    np.save(folder / "X.npy", X)
    np.save(folder / "y.npy", y)


def rank_fit(rank: int, world: int, folder: str, cfg: dict) -> dict:
    """One rank: warm up, then the timed fit of this rank's shard (run by the spawner)."""
    import torch
    import torch.distributed as dist

    from residuals.boosting import BoostingRegressor, _collective

    torch.set_num_threads(1)
    waits = []  # seconds this rank waited in each collective of the timed fit
    wait = _collective.Collective._wait

    def timed_wait(self, work, what):
        start = time.perf_counter()
        wait(self, work, what)
        waits.append(time.perf_counter() - start)

    _collective.Collective._wait = timed_wait
    X = np.load(Path(folder) / "X.npy", mmap_mode="r")
    y = np.load(Path(folder) / "y.npy", mmap_mode="r")
    cuts = np.linspace(0, X.shape[0], world + 1).astype(int)
    Xs, ys = (
        np.array(X[cuts[rank] : cuts[rank + 1]]),
        np.array(y[cuts[rank] : cuts[rank + 1]]),
    )
    params = {
        "tree_method": "hist",
        "distributed": True,
        "max_depth": cfg["max_depth"],
        "random_state": 0,
    }
    BoostingRegressor(n_estimators=2, **params).fit(Xs[:2000], ys[:2000])
    model = BoostingRegressor(n_estimators=cfg["n_estimators"], **params)
    dist.barrier()
    waits.clear()
    start = time.perf_counter()
    model.fit(Xs, ys)
    dist.barrier()
    seconds = time.perf_counter() - start
    probe = model.predict(np.array(X[:1000]))
    return {
        "seconds": seconds,
        "collectives": len(waits),
        "wait_s": sum(waits),
        "model_hash": hashlib.sha256(probe.tobytes()).hexdigest()[:16],
    }


def _rank_main(rank, world, port, folder, cfg, cores, results) -> None:
    if cores:
        os.sched_setaffinity(0, {cores[rank % len(cores)]})
    import datetime

    import torch.distributed as dist

    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=300),
    )
    try:
        results.put((rank, rank_fit(rank, world, folder, cfg)))
    finally:
        dist.destroy_process_group()


def run_case(world: int, folder: str, cfg: Config) -> dict:
    """Start ``world`` rank processes, fit, return rank 0's record."""
    import multiprocessing as mp
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the spawned ranks
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=_rank_main,
            args=(r, world, port, folder, asdict(cfg), cfg.cores, results),
        )
        for r in range(world)
    ]
    for p in procs:
        p.start()
    try:
        out = dict(results.get(timeout=cfg.timeout) for _ in range(world))
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    waits = [out[r]["wait_s"] for r in range(world)]
    # if every rank waits as long as rank 0, the time is the transfers', not imbalance
    return {**out[0], "least_wait_s": min(waits)}


def run(cfg: Config) -> dict:
    """The benchmark as tables: one row per fit, and the summary with the goal."""
    import pandas as pd

    fits = []
    with tempfile.TemporaryDirectory() as folder:
        make_data(cfg.rows, cfg.features, Path(folder))
        for round_ in range(cfg.repeats):
            for world in cfg.ranks:
                record = run_case(world, folder, cfg)
                fits.append({"round": round_, "ranks": world, **record})
                print(
                    f"round {round_}, {world} rank(s): {record['seconds']:.2f} s",
                    file=sys.stderr,
                    flush=True,
                )
    fits = pd.DataFrame(fits)
    base = fits[fits.ranks == cfg.ranks[0]].seconds.median()
    rows = []
    for world, group in fits.groupby("ranks"):
        median = statistics.median(group.seconds)
        rows.append(
            {
                "ranks": world,
                "rows": cfg.rows,
                "features": cfg.features,
                "n_estimators": cfg.n_estimators,
                "max_depth": cfg.max_depth,
                "seconds_median": median,
                "seconds_min": group.seconds.min(),
                "seconds_max": group.seconds.max(),
                "speedup": base / median,
                "collectives": int(group.collectives.median()),
                "rank0_wait_s_median": group.wait_s.median(),
                "least_rank_wait_s_median": group.least_wait_s.median(),
                "same_model_as_1_rank": bool((group.model_hash == fits.model_hash.iloc[0]).all()),
            }
        )
    summary = pd.DataFrame(rows)
    two = summary[summary.ranks == 2]
    goal = (
        "not measured" if two.empty else ("pass" if two.speedup.iloc[0] >= GOAL_SPEEDUP else "FAIL")
    )
    summary["goal_2_ranks_1_6x"] = goal
    return {"results": summary, "fits": fits}


def parse_args(argv=None) -> Config:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--features", type=int, default=20)
    p.add_argument("--ranks", default="1,2", help="rank counts, comma-separated")
    p.add_argument("--n-estimators", type=int, default=50)
    p.add_argument("--max-depth", type=int, default=6)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cores", default=None, help="pin rank r to core cores[r %% len], e.g. 0,1")
    p.add_argument("--timeout", type=float, default=900.0)
    p.add_argument("--out", default="benchmarks/results/boosting-distributed")
    a = p.parse_args(argv)
    return Config(
        a.rows,
        a.features,
        [int(r) for r in a.ranks.split(",")],
        a.n_estimators,
        a.max_depth,
        a.repeats,
        [int(c) for c in a.cores.split(",")] if a.cores else None,
        a.timeout,
        a.out,
    )


def main(argv=None) -> int:
    cfg = parse_args(argv)
    sys.path.insert(0, str(Path(__file__).parent))
    from _machine import machine_info, write_results

    load_before = os.getloadavg()
    tables = run(cfg)
    meta = {
        "machine": machine_info("cpu"),
        "config": asdict(cfg),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }
    print(tables["results"].to_string(index=False))
    paths = write_results(tables, meta, cfg.out, "boosting_distributed")
    print(f"saved {paths['json']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
