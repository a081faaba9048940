"""Fused training's throughput: N nets as one fused model, as N processes, and one at a time.

For each N (members) three ways of training N copies of one net (default
ResNet-20 on Fashion-MNIST-shaped images, 1x28x28, batch 128, the trainer's
defaults for the device: bf16 on CUDA, CUDA graphs), all measured in the same
run:

``fused``
    :func:`residuals.train.fused.train_fused`: the N nets as one
    :class:`~residuals.nets.fused.FusedResNet` in this process.
``processes``
    N worker processes training one net each at the same time (kernels of
    different processes run concurrently on a GPU only under NVIDIA's MPS; the
    table records whether its daemon was up). The workers are started once and
    reused, so their start-up is not timed; the rate is ``N * images`` over the
    span from the first timed epoch's start to the last one's end.
``sequential``
    one net at a time (:func:`residuals.train.train`): N nets take N times as
    long, so the aggregate rate is one net's, whatever N.

Every measurement trains two epochs of ``--steps`` steps on synthetic data and
times the second (the first pays for cuDNN's autotuning and the CUDA-graph
capture); the repeats are interleaved (round r measures every mode and N in
turn), so load that drifts on a shared machine hits all alike. Reported per
mode and N: images/s in aggregate and per member (median, min-max over the
rounds), the speedup over one net at a time, TFLOP/s counted from the nets'
real convolution and linear shapes (``count_flops`` of nets_throughput.py: a
training step is 3x the forward's multiply-adds, 2 FLOPs each, except the first
convolution's input gradient) and that as a fraction of the measured matmul
peak at the training precision (bf16 on CUDA). On CUDA also the peak memory per member:
a fused job's peak over the training call divided by N, against one net's own peak.

On the CPU the measuring process and every worker run ``--threads`` torch threads
(default 1, as the degradation sweep's workers do), so "fused" vs "sequential"
answers whether fusing helps a sweep worker.

Run::

    python benchmarks/fused_throughput.py                          # CPU: N = 1, 2, 4
    python benchmarks/fused_throughput.py --device cuda --members 1 2 4 8 16 24

``--paper`` adds the CIFAR-10 ``paper`` preset projected from measured fused steps
(:func:`paper_projection`).

Results: ``<out>/fused_throughput-raw.csv`` (one row per mode, N and round),
``fused_throughput-summary.csv``, ``fused_throughput-limits.csv``, ``fused_throughput-paper.csv``
(with ``--paper``) and ``fused_throughput.json`` (machine, versions, config, all tables).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing as mp
import os
import queue
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import residuals  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)

# isort: split
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import matmul_peak, run_benchmark, spread
from nets_throughput import count_flops, synthetic_data

MODES = ("fused", "processes", "sequential")
RAW_COLUMNS = ["mode", "members", "round", "seconds", "peak_memory_per_member"]


@dataclass
class FusedBenchConfig:
    """What to measure; the defaults take a few minutes on a 2-core CPU."""

    depth: int = 20  # CIFAR ResNet depth, 6n+2
    image_shape: tuple[int, int, int] = (1, 28, 28)  # Fashion-MNIST
    batch_size: int = 128
    steps: int = 8  # steps of the timed epoch
    members: tuple[int, ...] = (1, 2, 4)  # N
    process_members: tuple[int, ...] | None = None  # N of the processes mode (None: members)
    modes: tuple[str, ...] = MODES
    repeats: int = 3  # interleaved rounds
    device: str = "cpu"
    threads: int = 1  # torch threads per process on the CPU
    amp: bool | None = None  # None: the trainer's default
    peak_n: int | None = None  # matmul size of the peak (None: _machine's)
    paper: bool = False  # also project the CIFAR-10 paper preset
    paper_only: bool = False  # only that projection (and the peak)
    out: Path = Path("benchmarks/results/fused")

    def __post_init__(self):
        unknown = set(self.modes) - set(MODES)
        if unknown or not self.modes:
            raise ValueError(f"modes: choose from {MODES}, got {self.modes}")
        if any(n < 1 for n in self.members) or not self.members:
            raise ValueError(f"members must be positive, got {self.members}")
        for name in ("steps", "repeats", "batch_size", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def process_ns(self) -> tuple[int, ...]:
        return self.members if self.process_members is None else self.process_members


def train_config(cfg: FusedBenchConfig, seed: int):
    from residuals.train import TrainConfig

    return TrainConfig(
        epochs=2,
        batch_size=cfg.batch_size,
        warmup="none",
        seed=seed,
        device=cfg.device,
        amp=cfg.amp,
        replicas=1,
        eval_batch_size=256,
    )


def nets(cfg: FusedBenchConfig, n: int) -> list:
    from residuals.nets import cifar_resnet

    torch.manual_seed(0)
    return [cifar_resnet(cfg.depth, in_channels=cfg.image_shape[0]) for _ in range(n)]


def bench_data(cfg: FusedBenchConfig):
    return synthetic_data(cfg.steps * cfg.batch_size, cfg.device, image_shape=cfg.image_shape)


def fused_seconds(cfg: FusedBenchConfig, data, n: int) -> tuple[float, float]:
    """Seconds of the timed epoch of ``n`` nets fused, and the peak device memory per member
    (bytes above what was allocated before; NaN on the CPU)."""
    from residuals.train.fused import train_fused

    with _peak_memory(cfg.device) as peak:
        results = train_fused(nets(cfg, n), data, [train_config(cfg, s) for s in range(n)])
    return results[0].history[1].seconds, peak[0] / n


def sequential_seconds(cfg: FusedBenchConfig, data) -> tuple[float, float]:
    """Seconds of one net's timed epoch, and its peak device memory (as :func:`fused_seconds`)."""
    from residuals.train import train

    with _peak_memory(cfg.device) as peak:
        seconds = train(nets(cfg, 1)[0], data, train_config(cfg, 0)).history[1].seconds
    return seconds, peak[0]


@contextlib.contextmanager
def _peak_memory(device: str):
    """Yields a list whose one item becomes the block's peak CUDA memory above its start."""
    out = [math.nan]
    if not str(device).startswith("cuda"):
        yield out
        return
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    yield out
    torch.cuda.synchronize(device)
    out[0] = float(torch.cuda.max_memory_allocated(device) - base)


# ------------------------------------------------------------------ the processes mode
def _worker(cfg: FusedBenchConfig, parent: int, inbox, outbox) -> None:
    torch.set_num_threads(cfg.threads)
    from residuals.train import train

    data = bench_data(cfg)
    marks: list[float] = []
    while True:
        try:
            command = inbox.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent:  # the benchmark is gone: do not linger on the device
                return
            continue
        if command is None:
            return
        marks.clear()
        # the epoch records arrive after each epoch's synchronisation: epoch 1's marks
        # the timed epoch's start (its evaluation of 256 images included), epoch 2's its end
        train(
            nets(cfg, 1)[0],
            data,
            train_config(cfg, 0),
            on_epoch=lambda r: marks.append(time.monotonic()),
        )
        outbox.put((marks[0], marks[1]))


class Workers:
    """Processes that each train one net per command, started once and reused."""

    def __init__(self, cfg: FusedBenchConfig, n: int):
        ctx = mp.get_context("spawn")
        self.outbox = ctx.Queue()
        self.inboxes = [ctx.Queue() for _ in range(n)]
        self.procs = [
            ctx.Process(target=_worker, args=(cfg, os.getpid(), q, self.outbox), daemon=True)
            for q in self.inboxes
        ]
        for p in self.procs:
            p.start()

    def seconds(self, n: int) -> float:
        """Span of ``n`` workers' concurrent timed epochs."""
        for q in self.inboxes[:n]:
            q.put(True)
        spans = [self.outbox.get(timeout=600) for _ in range(n)]
        return max(e for _, e in spans) - min(s for s, _ in spans)

    def close(self) -> None:
        for q in self.inboxes:
            q.put(None)
        for p in self.procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()


# ------------------------------------------------------------------ measurement
def measure(cfg: FusedBenchConfig) -> dict:
    import pandas as pd

    from residuals.bench.degradation import cuda_mps_running
    from residuals.device import resolve_amp

    torch.set_num_threads(cfg.threads)
    data = bench_data(cfg)
    images = cfg.steps * cfg.batch_size
    workers = (
        Workers(cfg, max(cfg.process_ns))
        if "processes" in cfg.modes and cfg.process_ns and not cfg.paper_only
        else None
    )
    rows: list[tuple[str, int, int, float, float]] = []
    try:
        for r in range(0 if cfg.paper_only else cfg.repeats):
            for n in cfg.members:
                if "fused" in cfg.modes:
                    rows.append(("fused", n, r, *fused_seconds(cfg, data, n)))
                if workers is not None and n in cfg.process_ns:
                    rows.append(("processes", n, r, workers.seconds(n), math.nan))
            if "sequential" in cfg.modes:
                rows.append(("sequential", 1, r, *sequential_seconds(cfg, data)))
            # kept round by round: a run stopped by a time limit leaves its rounds so far
            cfg.out.mkdir(parents=True, exist_ok=True)
            pd.DataFrame(rows, columns=RAW_COLUMNS).to_csv(
                cfg.out / "fused_throughput-rounds.csv", index=False
            )
            print(f"round {r + 1}/{cfg.repeats} done", flush=True)
    finally:
        if workers is not None:
            workers.close()
    raw = pd.DataFrame(rows, columns=RAW_COLUMNS)
    raw["images_per_s"] = raw["members"] * images / raw["seconds"]

    amp = resolve_amp(cfg.amp, cfg.device, 1 if cfg.device == "cpu" else None)
    dtype = torch.bfloat16 if amp else torch.float32
    peak = matmul_peak(cfg.device, dtype, n=cfg.peak_n)
    _, train_flops = count_flops(nets(cfg, 1)[0], cfg.image_shape)
    limits = pd.DataFrame(
        [
            {
                "quantity": "matmul_peak",
                "precision": str(dtype).split(".")[-1],
                "median": peak.median,
                "min": peak.min,
                "max": peak.max,
                "unit": "FLOP/s",
                "train_flops_per_image": train_flops,
                "mps_running": cuda_mps_running(),
            }
        ]
    )
    tables = {"limits": limits}
    if not cfg.paper_only:
        tables.update(raw=raw, summary=summarize(raw, cfg, train_flops, peak.median))
    if cfg.paper or cfg.paper_only:
        tables["paper"] = paper_projection(cfg)
    return tables


def paper_projection(cfg: FusedBenchConfig):
    """The CIFAR-10 ``paper`` preset (plain and residual ResNet-20/32/44/56/110, 182 epochs)
    projected from measured fused steps: for each depth its two nets fused, seconds per
    step of the timed epoch (3x32x32 synthetic images, ``cfg.repeats`` rounds, median), times
    the preset's iterations; the total runs the depths' jobs one after another. Evaluation
    (5,000 validation images per epoch), process start and probes are left out."""
    import dataclasses

    import pandas as pd

    from residuals.bench.degradation import PRESETS
    from residuals.train import steps_per_epoch

    preset = PRESETS["paper"]
    iterations = preset.train.epochs * steps_per_epoch(
        50_000 - (preset.val_size or 0), preset.train.batch_size
    )
    shaped = dataclasses.replace(cfg, image_shape=(3, 32, 32))
    data = bench_data(shaped)
    rows = []
    for depth in preset.depths:
        at_depth = dataclasses.replace(shaped, depth=depth)
        seconds = [
            fused_seconds(at_depth, data, len(preset.variants))[0] / cfg.steps
            for _ in range(cfg.repeats)
        ]
        s = spread(seconds)
        rows.append(
            {
                "depth": str(depth),
                "members": len(preset.variants),
                "s_per_step": s.median,
                "s_per_step_min": s.min,
                "s_per_step_max": s.max,
                "iterations": iterations,
                "projected_s": s.median * iterations,
            }
        )
    table = pd.DataFrame(rows)
    total = {
        "depth": "all, one job at a time",
        "members": int(table["members"].sum()),
        "iterations": iterations,
        "projected_s": float(table["projected_s"].sum()),
    }
    return pd.concat([table, pd.DataFrame([total])], ignore_index=True)


def summarize(raw, cfg: FusedBenchConfig, train_flops: float, peak: float):
    """Median and range per (mode, N); sequential rows for every N (the same net, N times)."""
    import pandas as pd

    seq = raw[raw["mode"] == "sequential"]["images_per_s"].tolist()
    seq_rate = spread(seq).median if seq else math.nan
    rows = []
    memory = raw.groupby(["mode", "members"])["peak_memory_per_member"].max()
    for (mode, n), g in raw.groupby(["mode", "members"], sort=False):
        rows.append((mode, int(n), g["images_per_s"].tolist(), memory[(mode, n)]))
    if seq:
        rows = [r for r in rows if r[0] != "sequential"]
        rows += [("sequential", n, seq, memory[("sequential", 1)]) for n in cfg.members]
    out = []
    for mode, n, rates, mem in rows:
        s = spread(rates)
        out.append(
            {
                "mode": mode,
                "members": n,
                "images_per_s": s.median,
                "images_per_s_min": s.min,
                "images_per_s_max": s.max,
                "images_per_s_per_member": s.median / n,
                "rounds": s.n,
                "vs_sequential": s.median / seq_rate,
                "tflop_per_s": s.median * train_flops / 1e12,
                "fraction_of_peak": s.median * train_flops / peak,
                "peak_memory_per_member_mb": mem / 2**20,
                "depth": cfg.depth,
                "batch_size": cfg.batch_size,
                "device": cfg.device,
                "threads": cfg.threads,
            }
        )
    return pd.DataFrame(out).sort_values(["members", "mode"], ignore_index=True)


def show(tables: dict, info: dict) -> None:
    machine = info.get("machine", {})
    print(f"\n{machine.get('gpu') or machine.get('cpu_model', '')}: ResNet fused throughput")
    if "summary" in tables:
        print(
            f"{'mode':>11} {'N':>3} {'images/s':>12} {'[min-max]':>21} {'/member':>9} "
            f"{'x seq':>6} {'TFLOP/s':>8} {'%peak':>6} {'MB/member':>10}"
        )
        for r in tables["summary"].itertuples():
            print(
                f"{r.mode:>11} {r.members:>3} {r.images_per_s:>12,.0f} "
                f"[{r.images_per_s_min:>9,.0f}-{r.images_per_s_max:>9,.0f}] "
                f"{r.images_per_s_per_member:>9,.0f} {r.vs_sequential:>6.2f} "
                f"{r.tflop_per_s:>8.3f} {100 * r.fraction_of_peak:>5.2f}% "
                f"{r.peak_memory_per_member_mb:>10.0f}"
            )
    lim = tables["limits"].iloc[0]
    print(
        f"matmul peak ({lim['precision']}): {lim['median'] / 1e12:.1f} TFLOP/s; "
        f"MPS daemon running: {bool(lim['mps_running'])}"
    )
    if "paper" in tables:
        print("CIFAR-10 paper preset, projected from fused steps (plain + residual per depth):")
        for r in tables["paper"].itertuples():
            print(f"  depth {r.depth}: {r.projected_s / 60:.1f} min")


def parse_args(argv: list[str] | None = None) -> FusedBenchConfig:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    d = FusedBenchConfig()
    p.add_argument("--depth", type=int, default=d.depth)
    p.add_argument(
        "--image-shape", type=int, nargs=3, default=list(d.image_shape), metavar=("C", "H", "W")
    )
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--steps", type=int, default=d.steps, help="steps of the timed epoch")
    p.add_argument("--members", type=int, nargs="+", default=list(d.members), help="values of N")
    p.add_argument(
        "--process-members",
        type=int,
        nargs="*",
        default=None,
        help="N of the processes mode (default: --members)",
    )
    p.add_argument("--modes", nargs="+", default=list(d.modes), choices=MODES)
    p.add_argument("--repeats", type=int, default=d.repeats, help="interleaved rounds")
    p.add_argument("--device", default=d.device)
    p.add_argument("--threads", type=int, default=d.threads, help="torch threads per process")
    p.add_argument("--amp", choices=("auto", "on", "off"), default="auto")
    p.add_argument("--peak-n", type=int, default=None, help="matmul size of the peak")
    p.add_argument(
        "--paper",
        action="store_true",
        help="also project the CIFAR-10 paper preset from fused steps",
    )
    p.add_argument("--paper-only", action="store_true", help="only the paper projection")
    p.add_argument("--out", type=Path, default=d.out)
    a = p.parse_args(argv)
    return FusedBenchConfig(
        depth=a.depth,
        image_shape=tuple(a.image_shape),
        batch_size=a.batch_size,
        steps=a.steps,
        members=tuple(a.members),
        process_members=None if a.process_members is None else tuple(a.process_members),
        modes=tuple(a.modes),
        repeats=a.repeats,
        device=a.device,
        threads=a.threads,
        amp={"auto": None, "on": True, "off": False}[a.amp],
        peak_n=a.peak_n,
        paper=a.paper,
        paper_only=a.paper_only,
        out=a.out,
    )


def main(argv: list[str] | None = None) -> dict:
    return run_benchmark("fused_throughput", parse_args(argv), measure, show)


if __name__ == "__main__":
    main()
