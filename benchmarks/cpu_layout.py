"""Training images/s on a multi-core CPU, as the project lays its work out there.

``nets_throughput.py`` compares *one* training loop with another. On a CPU the
project does not train one net at a time: ``residuals bench degradation`` runs
one single-thread worker per core (``--jobs``), because two one-thread
processes beat one two-thread process on small convolutions, and because
bf16 is only safe at one thread (see benchmarks/README.md, "Two threads").
This script measures that layout against the tutorial loop:

``tutorial``
    the tutorial loop of ``nets_throughput.py`` (DataLoader with per-sample
    CPU transforms, fp32, NCHW, ``.item()`` every step), in this process, at
    torch's default threads (one per core): what a tutorial user runs.
``project, N one-thread processes``
    ``--processes`` worker processes (default: one per core), each training its
    own copy of the model with :func:`residuals.train.train` and its defaults at
    one torch thread (bf16 autocast on CPUs with native bf16), all at once. The
    layout's images/s is ``N * images per round / the slowest worker's round
    time``: the throughput of a sweep of N nets, counted conservatively.

Rounds are interleaved: all workers start round ``k`` together on a signal
from this process, which waits for them, then runs round ``k`` of the tutorial
loop while they wait: load that drifts hits both alike. Each side has one
untimed warm-up round. Reported: median images/s [min-max] of each side, the
ratio of the medians and the median [min-max] of the per-round ratios.

This is a *layout* comparison (a sweep's throughput), not the single-loop
comparison of ``nets_throughput.py``: a single training run at torch's default
threads is in that script.

Run::

    python benchmarks/cpu_layout.py                        # resnet56, one worker per core
    python benchmarks/cpu_layout.py --models resnet20 resnet56 --repeats 9

Results: a printed table, ``<out>/cpu_layout.csv`` and ``<out>/cpu_layout.json``
(machine, versions, date, load average, config, the table).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import residuals  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)

# isort: split
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import run_benchmark, spread  # noqa: E402
from nets_throughput import (  # noqa: E402
    IMAGE_SHAPE,
    NUM_CLASSES,
    ThroughputConfig,
    TutorialLoop,
    project_config,
    synthetic_data,
)

GOAL = 1.5  # the CPU goal for the trainer against the tutorial loop


@dataclass
class LayoutConfig:
    models: tuple[str, ...] = ("resnet56",)
    processes: int = 0  # one-thread trainer processes (0: one per core)
    batch_size: int = 128  # images per step
    steps: int = 10  # steps per round
    repeats: int = 7  # timed rounds per side (after one warm-up round)
    seed: int = 0
    device: str = "cpu"
    out: Path = Path("benchmarks/results")

    def __post_init__(self):
        for name in ("batch_size", "steps", "repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.processes < 0:
            raise ValueError(f"processes must be >= 0 (0: one per core), got {self.processes}")

    @property
    def n_processes(self) -> int:
        return self.processes or (os.cpu_count() or 1)

    def throughput(self) -> ThroughputConfig:
        return ThroughputConfig(
            models=self.models,
            batch_size=self.batch_size,
            steps=self.steps,
            repeats=self.repeats,
            workers=(0,),
            device="cpu",
            seed=self.seed,
        )


# ------------------------------------------------------------------- worker
def worker(spec: dict) -> None:
    """One trainer process: one torch thread; prints ``ready``, then one JSON line
    per epoch; waits for a line on stdin before every epoch after the first."""
    from residuals.device import resolve_amp
    from residuals.nets import build_model
    from residuals.train import train

    torch.set_num_threads(1)
    cfg = LayoutConfig(
        models=(spec["model"],),
        batch_size=spec["batch_size"],
        steps=spec["steps"],
        repeats=spec["repeats"],
        seed=spec["seed"],
    )
    torch.manual_seed(cfg.seed + spec["rank"])
    model = build_model(spec["model"], in_channels=IMAGE_SHAPE[0], num_classes=NUM_CLASSES)
    data = synthetic_data(cfg.steps * cfg.batch_size, "cpu", cfg.seed + spec["rank"])
    tcfg = project_config(cfg.throughput())
    amp = resolve_amp(tcfg.amp, "cpu", threads=1)  # the precision the trainer picks here

    def after_epoch(record) -> None:
        print(
            json.dumps({"epoch": record.epoch, "seconds": record.seconds, "amp": amp}), flush=True
        )
        if record.epoch < tcfg.epochs:
            sys.stdin.readline()  # the signal to start the next round

    print("ready", flush=True)
    sys.stdin.readline()
    train(model, data, tcfg, on_epoch=after_epoch)


# ------------------------------------------------------------------- parent
def measure_model(name: str, cfg: LayoutConfig) -> dict:
    from residuals.nets import build_model

    n = cfg.n_processes
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--worker",
                json.dumps(
                    {
                        "model": name,
                        "batch_size": cfg.batch_size,
                        "steps": cfg.steps,
                        "repeats": cfg.repeats,
                        "seed": cfg.seed,
                        "rank": r,
                    }
                ),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for r in range(n)
    ]
    try:
        for p in procs:  # wait until every worker has built its model and data
            line = p.stdout.readline().strip()
            if line != "ready":
                raise RuntimeError(
                    f"a worker failed to start (said {line!r}); run with --worker to see why"
                )
        torch.manual_seed(cfg.seed)
        base = build_model(name, in_channels=IMAGE_SHAPE[0], num_classes=NUM_CLASSES)
        data = synthetic_data(cfg.steps * cfg.batch_size, "cpu", cfg.seed)
        tutorial = TutorialLoop(
            base,
            data.train_x,
            data.train_y,
            cfg.throughput(),
            workers=0,
            mean=data.mean,
            std=data.std,
        )
        images = cfg.steps * cfg.batch_size
        project_s, tutorial_s, amp = [], [], None
        for k in range(1 + cfg.repeats):  # round 0: both sides' warm-up
            for p in procs:
                p.stdin.write("go\n")
                p.stdin.flush()
            reports = [json.loads(p.stdout.readline()) for p in procs]
            amp = reports[0]["amp"]
            if k == 0:
                tutorial.warmup()
                continue
            project_s.append(
                max(r["seconds"] for r in reports)
            )  # the slowest worker: all ran at once
            tutorial_s.append(tutorial.timed_round())
        for p in procs:
            p.wait(timeout=600)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    proj = [n * images / s for s in project_s]
    tut = [images / s for s in tutorial_s]
    ps, ts, ratio = spread(proj), spread(tut), spread([a / b for a, b in zip(proj, tut)])
    return {
        "model": name,
        "processes": n,
        "project_precision": "bf16" if amp else "fp32",
        "tutorial_threads": torch.get_num_threads(),
        "batch_size": cfg.batch_size,
        "steps": cfg.steps,
        "repeats": cfg.repeats,
        "project_images_per_s": ps.median,
        "project_images_per_s_min": ps.min,
        "project_images_per_s_max": ps.max,
        "tutorial_images_per_s": ts.median,
        "tutorial_images_per_s_min": ts.min,
        "tutorial_images_per_s_max": ts.max,
        "speedup": ps.median / ts.median,
        "speedup_paired": ratio.median,
        "speedup_paired_min": ratio.min,
        "speedup_paired_max": ratio.max,
    }


def measure(cfg: LayoutConfig) -> dict:
    import pandas as pd

    return {"results": pd.DataFrame([measure_model(name, cfg) for name in cfg.models])}


def show(tables: dict, info: dict) -> None:
    for r in tables["results"].itertuples():
        print(
            f"\n{r.model}: {r.processes} one-thread trainer processes ({r.project_precision}) "
            f"{r.project_images_per_s:.0f} images/s [{r.project_images_per_s_min:.0f}-"
            f"{r.project_images_per_s_max:.0f}] against the tutorial loop at {r.tutorial_threads} threads "
            f"{r.tutorial_images_per_s:.0f} [{r.tutorial_images_per_s_min:.0f}-{r.tutorial_images_per_s_max:.0f}]:"
            f" {r.speedup:.2f}x (paired rounds {r.speedup_paired:.2f} [{r.speedup_paired_min:.2f}-"
            f"{r.speedup_paired_max:.2f}]); {'>=' if r.speedup >= GOAL else '<'} {GOAL:g}x"
        )


def parse_args(argv=None) -> LayoutConfig:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    d = LayoutConfig()
    p.add_argument(
        "--models", nargs="+", default=list(d.models), help="model names (default: %(default)s)"
    )
    p.add_argument(
        "--processes",
        type=int,
        default=d.processes,
        help="one-thread trainer processes (default 0: one per core)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=d.batch_size,
        help="images per step (default: %(default)s)",
    )
    p.add_argument(
        "--steps", type=int, default=d.steps, help="steps per round (default: %(default)s)"
    )
    p.add_argument(
        "--repeats", type=int, default=d.repeats, help="timed rounds (default: %(default)s)"
    )
    p.add_argument("--seed", type=int, default=d.seed, help="default: %(default)s")
    p.add_argument("--out", type=Path, default=d.out, help="results folder (default: %(default)s)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        worker(json.loads(a.worker))
        raise SystemExit(0)
    try:
        return LayoutConfig(
            models=tuple(a.models),
            processes=a.processes,
            batch_size=a.batch_size,
            steps=a.steps,
            repeats=a.repeats,
            seed=a.seed,
            out=a.out,
        )
    except ValueError as e:
        p.error(str(e))


if __name__ == "__main__":
    run_benchmark("cpu_layout", parse_args(), measure, show)
