"""Helpers shared by the benchmark scripts: the machine, its measured limits, timing.

Everything a benchmark reports about speed is measured here the same way:

* :func:`time_block` times a block of work with CUDA events on a GPU (after a
  ``synchronize``) and ``time.perf_counter`` on the CPU, so asynchronous GPU work
  is never timed with a wall clock that stops before the kernels do;
* :func:`spread` reduces repeats to ``median`` with ``min``-``max``;
* :func:`matmul_peak` and :func:`copy_bandwidth` measure the two ceilings a
  training step is held against (a roofline in two numbers): dense matmul FLOP/s
  and device-memory copy bytes/s;
* :func:`machine_info` describes the machine (CPU model, cores, torch threads,
  GPU name and memory, versions, date) for the record of every result;
* :func:`write_results` saves the tables as CSV + JSON, and :func:`run_benchmark`
  is the common ``main`` of a script (measure, describe, print, save).

Import ``residuals`` before ``torch`` (the scripts do): it sets
``OMP_WAIT_POLICY=PASSIVE``, without which torch's spinning OpenMP threads made
2-thread CPU training 10-25x slower on a machine where another process held a core.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import residuals  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)

# isort: split
import torch

if TYPE_CHECKING:  # pandas is imported by the scripts
    import pandas as pd

__all__ = [
    "Spread",
    "spread",
    "synchronize",
    "time_block",
    "time_repeats",
    "matmul_peak",
    "copy_bandwidth",
    "machine_info",
    "device_label",
    "write_results",
    "format_si",
    "run_benchmark",
]


# --------------------------------------------------------------------- timing
@dataclass(frozen=True)
class Spread:
    """Repeated measurements reduced to median and range."""

    median: float
    min: float
    max: float
    n: int

    def scaled(self, factor: float) -> Spread:
        """The same spread of ``factor * value``, for a positive ``factor``."""
        return Spread(self.median * factor, self.min * factor, self.max * factor, self.n)

    def inverted(self, numerator: float = 1.0) -> Spread:
        """``numerator / value``: turns seconds into a rate (min and max swap)."""
        return Spread(numerator / self.median, numerator / self.max, numerator / self.min, self.n)

    def __str__(self) -> str:
        return f"{format_si(self.median)} [{format_si(self.min)}-{format_si(self.max)}]"


def spread(values: Sequence[float]) -> Spread:
    """Median, min and max of repeated measurements (at least one)."""
    if len(values) == 0:
        raise ValueError("spread() needs at least one measurement")
    return Spread(
        float(statistics.median(values)), float(min(values)), float(max(values)), len(values)
    )


def synchronize(device: torch.device | str) -> None:
    """Wait for all queued work on ``device`` (a no-op on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Elapsed:
    seconds: float = float("nan")


@contextlib.contextmanager
def time_block(device: torch.device | str) -> Iterator[_Elapsed]:
    """Seconds spent by the work queued inside the block, on ``device``.

    On a GPU: synchronize, record a CUDA event, run the block, record an event,
    synchronize, read ``start.elapsed_time(end)``. On the CPU: perf_counter. Read
    ``.seconds`` after the block::

        with time_block(device) as t:
            for _ in range(steps):
                step()
        t.seconds
    """
    device = torch.device(device)
    out = _Elapsed()
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        yield out
        end.record()
        torch.cuda.synchronize(device)
        out.seconds = start.elapsed_time(end) / 1e3  # ms -> s
    else:
        t0 = time.perf_counter()
        yield out
        out.seconds = time.perf_counter() - t0


def time_repeats(
    block: Callable[[], Any], device: torch.device | str, *, repeats: int, warmup: int = 1
) -> list[float]:
    """Seconds per call of ``block()`` for ``repeats`` timed calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        block()
    synchronize(device)
    seconds = []
    for _ in range(repeats):
        with time_block(device) as t:
            block()
        seconds.append(t.seconds)
    return seconds


# ------------------------------------------------------------ machine limits
def matmul_peak(
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
    *,
    n: int | None = None,
    iters: int | None = None,
    repeats: int = 5,
) -> Spread:
    """Measured dense matmul throughput in FLOP/s: ``2 n^3`` per ``(n, n) @ (n, n)``.

    ``n`` defaults to 8192 on a GPU and 2048 on the CPU (large enough to reach the
    BLAS plateau, small enough to take seconds). On CUDA the fp32 figure follows
    ``torch.backends.cuda.matmul.allow_tf32`` as currently set; use
    ``dtype=torch.bfloat16`` for the tensor-core peak a bf16 autocast step can reach.
    """
    device = torch.device(device)
    gpu = device.type == "cuda"
    n = n or (8192 if gpu else 2048)
    iters = iters or (20 if gpu else 3)
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    c = torch.empty(n, n, device=device, dtype=dtype)

    def block():
        for _ in range(iters):
            torch.mm(a, b, out=c)

    seconds = time_repeats(block, device, repeats=repeats, warmup=1)
    return spread(seconds).inverted(2.0 * n**3 * iters)


def copy_bandwidth(
    device: torch.device | str,
    *,
    nbytes: int | None = None,
    iters: int | None = None,
    repeats: int = 5,
) -> Spread:
    """Measured memory bandwidth in bytes/s of ``dst.copy_(src)``, counting read + write.

    A copy of ``nbytes`` moves ``2 * nbytes`` (each byte read once and written
    once). The buffer (1 GiB on a GPU, 256 MiB on the CPU by default) is far larger
    than any cache, so this is the DRAM/HBM ceiling a memory-bound kernel meets.
    """
    device = torch.device(device)
    gpu = device.type == "cuda"
    nbytes = nbytes or (1 << 30 if gpu else 256 << 20)
    iters = iters or (10 if gpu else 2)
    src = torch.ones(nbytes // 4, device=device, dtype=torch.float32)
    dst = torch.empty_like(src)

    def block():
        for _ in range(iters):
            dst.copy_(src)

    seconds = time_repeats(block, device, repeats=repeats, warmup=1)
    return spread(seconds).inverted(2.0 * src.numel() * 4 * iters)


# ------------------------------------------------------------------- machine
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device | str) -> dict[str, Any]:
    """The machine, software and date a result was measured on (JSON-ready)."""
    from residuals.runs import environment_info

    device = torch.device(device)
    env = environment_info(str(device))
    machine = env["machine"]
    machine["cpu_model"] = _cpu_model()
    machine["cpu_count"] = os.cpu_count()
    try:
        machine["cpus_usable"] = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        machine["cpus_usable"] = os.cpu_count()
    machine["torch_threads"] = torch.get_num_threads()
    machine["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY")
    from residuals.device import cpu_has_native_bf16

    machine["cpu_native_bf16"] = cpu_has_native_bf16()  # the trainer's CPU default is bf16 if so
    if device.type == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(device)
        machine["gpu"] = props.name
        machine["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        machine["cuda"] = torch.version.cuda
        machine["cudnn"] = torch.backends.cudnn.version()
    else:
        machine["gpu"] = None
    return {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        **env,
    }


def device_label(info: dict[str, Any]) -> str:
    """One line naming the device a result was measured on."""
    m = info["machine"]
    if m.get("gpu"):
        return f"{m['gpu']} ({m.get('gpu_memory_gib')} GiB)"
    bf16 = ", native bf16" if m.get("cpu_native_bf16") else ""
    return (
        f"{m['cpu_model']}{bf16}, {m['cpus_usable']} cores usable, "
        f"{m['torch_threads']} torch threads"
    )


# -------------------------------------------------------------------- output
_SI = [(1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]


def format_si(x: float, digits: int = 3) -> str:
    """``1.23e9 -> '1.23G'``; plain numbers below 1000 keep ``digits`` significant digits."""
    if x != x:  # NaN
        return "n/a"
    for scale, prefix in _SI:
        if abs(x) >= scale:
            return f"{x / scale:.{digits}g}{prefix}"
    return f"{x:.{digits}g}"


def write_results(
    tables: dict[str, pd.DataFrame], meta: dict[str, Any], out: str | os.PathLike, name: str
) -> dict[str, Path]:
    """Save each table as ``<out>/<name>[-<key>].csv`` and everything as ``<out>/<name>.json``.

    The JSON holds ``meta`` (machine, versions, date, config) and every table as a
    list of records, so one file is a complete, self-describing result.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for key, df in tables.items():
        path = out / (f"{name}.csv" if key == "results" else f"{name}-{key}.csv")
        df.to_csv(path, index=False)
        paths[key] = path
    doc = {
        **meta,
        "tables": {k: json.loads(df.to_json(orient="records")) for k, df in tables.items()},
    }
    path = out / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    paths["json"] = path
    return paths


def run_benchmark(
    name: str, cfg: Any, measure: Callable[[Any], dict], show: Callable[[dict, dict], None]
) -> dict:
    """The common ``main`` of a benchmark script: measure, describe, print, save.

    ``cfg`` is the script's config dataclass (with ``device`` and ``out``);
    ``measure(cfg)`` returns its tables; ``show(tables, info)`` prints them. The
    load average before and after is recorded: on a shared machine it says how
    noisy the timings were.
    """
    import dataclasses
    import sys

    load_before = os.getloadavg()
    tables = measure(cfg)
    info = machine_info(cfg.device)
    meta = {
        **info,
        "benchmark": name,
        "command": " ".join(sys.argv),
        "load_average_1_5_15min": {"before": load_before, "after": os.getloadavg()},
        "config": {
            k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(cfg).items()
        },
    }
    show(tables, info)
    paths = write_results(tables, meta, cfg.out, name)
    print(f"\nsaved: {', '.join(str(p) for p in paths.values())}")
    return tables
