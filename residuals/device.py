"""Device and precision policy: the one place that decides where and in what arithmetic code runs.

Owns four decisions, each a pure function of its arguments and the machine:

* :func:`resolve_device` -- ``"auto"`` / ``"cpu"`` / ``"cuda[:i]"`` to a concrete device
  name, or :class:`DeviceError` (one error type for the whole package);
* :func:`cpu_has_native_bf16` -- whether this CPU computes bf16 natively;
* :func:`resolve_amp` -- whether training runs in bf16 autocast;
* :func:`resolve_replicas` / :func:`resolve_replicas_amp` -- how many data-parallel model
  copies (:mod:`residuals.replicas`) a CPU run uses, and the threads each gets.

The trainer, both benches, the booster and the benchmark scripts call these; a command
line passes the user's ``--device`` string down unchanged and turns a
:class:`DeviceError` into a usage error. Measured figures behind the defaults are in
``benchmarks/README.md`` ("Nets").
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Protocol

import torch

__all__ = [
    "AUTO_MIN_SHARD",
    "CPU_BF16_FEATURES",
    "DEVICES",
    "DeviceError",
    "autocast",
    "cpu_has_native_bf16",
    "is_cuda",
    "resolve_amp",
    "resolve_device",
    "resolve_replicas",
    "resolve_replicas_amp",
    "spread_devices",
]

DEVICES = ("auto", "cpu", "cuda")  # what a command line offers (cuda:<i> works in the library)
CPU_BF16_FEATURES = ("avx512_bf16", "amx_bf16")  # x86 instructions that compute in bf16 natively
CPUINFO = Path("/proc/cpuinfo")  # the fallback's source of CPU flags (Linux)
AUTO_MIN_SHARD = 32  # images of a batch per replica, at least, for replicas=None to add one


class DeviceError(ValueError, RuntimeError):
    """A device that cannot be used here; the message says which ones can.

    A ``ValueError`` (a bad argument) and a ``RuntimeError`` (the machine lacks it), so
    code written against either of the package's former error types keeps working.
    """


def resolve_device(device: str | torch.device) -> str:
    """``"auto"`` -> ``"cuda"`` when a CUDA GPU is visible, else ``"cpu"``; ``"cpu"`` and
    ``"cuda[:i]"`` are checked and returned as given. Raises :class:`DeviceError`."""
    name = str(device)
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise DeviceError(
            f"unknown device {name!r}: use 'auto', 'cpu', 'cuda' or 'cuda:<index>'"
        ) from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {name!r} was asked for but no CUDA GPU is available (torch "
                f"{torch.__version__}, CUDA build: {torch.version.cuda}); use --device cpu or "
                "--device auto (device='cpu' or 'auto' in Python)"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {name!r} does not exist: {torch.cuda.device_count()} "
                "CUDA device(s) are visible"
            )
    elif dev.type != "cpu":
        raise DeviceError(f"device {name!r} is not supported: use 'auto', 'cpu' or 'cuda[:i]'")
    return name


def spread_devices(device: str) -> list[str]:
    """The devices a pool of worker processes for ``device`` takes turns on: every visible GPU
    for a plain ``"cuda"`` (worker ``k`` on ``cuda:<k mod GPUs>``), else ``device`` alone
    (``"cuda:1"`` pins them all to GPU 1)."""
    if device == "cuda" and torch.cuda.is_available():
        return [f"cuda:{i}" for i in range(max(1, torch.cuda.device_count()))]
    return [device]


def is_cuda(device: str | torch.device) -> bool:
    """Whether ``device`` (already resolved) is a CUDA device."""
    return torch.device(device).type == "cuda"


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 dot-product instructions (AVX512-BF16 or AMX-BF16).

    Where it has not, oneDNN emulates bf16 and autocast can be slower than fp32, so
    the trainer's default keeps fp32 there (ARM's bf16 is not measured: fp32 too).
    Read from ``torch.cpu.get_capabilities()`` (torch >= 2.10), else ``/proc/cpuinfo``.
    """
    get = getattr(torch.cpu, "get_capabilities", None)
    if get is not None:
        caps = get()
        return any(bool(caps.get(f, False)) for f in CPU_BF16_FEATURES)
    try:
        flags = CPUINFO.read_text().split()
    except OSError:
        return False
    return any(f in flags for f in CPU_BF16_FEATURES)


def resolve_amp(amp: bool | None, device: str, threads: int | None = None) -> bool:
    """Whether training on ``device`` runs in bf16 autocast: ``amp`` if given; by default
    (None) on CUDA, and on a CPU with native bf16 (:func:`cpu_has_native_bf16`) when torch
    runs one thread (``threads``; default ``torch.get_num_threads()``); fp32 elsewhere.

    Why one thread only: on a shared CPU, oneDNN's multi-threaded bf16 backward
    convolution waits for descheduled threads and can train slower than fp32, while
    one-thread bf16 is steadily faster (figures: ``benchmarks/README.md``, "Nets"). The
    degradation sweep's CPU workers run one thread each.
    """
    if amp is not None:
        return amp
    kind = torch.device(device).type
    if kind == "cuda":
        return True
    threads = torch.get_num_threads() if threads is None else threads
    return kind == "cpu" and cpu_has_native_bf16() and threads == 1


def resolve_replicas(
    replicas: int | None,
    device: str,
    batch_size: int,
    *,
    compile: bool = False,
    threads: int | None = None,
) -> tuple[int, int]:
    """``(replicas, torch threads per replica)`` for training on ``device`` at ``batch_size``.

    ``replicas`` if given. By default (None), on the CPU, one per torch thread
    (``threads``; default ``torch.get_num_threads()``, one per core), as long
    as each replica gets at least :data:`AUTO_MIN_SHARD` images of a batch
    (batch 128: at most 4); one on CUDA and with ``compile``. The threads are
    shared out, ``threads // replicas`` each (at least 1). See
    :mod:`residuals.replicas`: on a shared 2-core CPU, two one-thread replicas
    trained ResNet-20/56 faster than one model on two threads, and they let bf16
    run where its two-thread kernels stall (:func:`resolve_amp`).
    """
    threads = torch.get_num_threads() if threads is None else threads
    if replicas is None:
        if torch.device(device).type != "cpu" or compile:
            replicas = 1
        else:
            replicas = max(1, min(threads, batch_size // AUTO_MIN_SHARD))
    return replicas, max(1, threads // replicas)


class _Recipe(Protocol):
    """The fields of a training configuration the policy reads (``TrainConfig`` has them)."""

    replicas: int | None
    device: str
    batch_size: int
    compile: bool
    amp: bool | None


def resolve_replicas_amp(cfg: _Recipe, *, threads: int | None = None) -> tuple[int, int, bool]:
    """``(replicas, torch threads per replica, amp)`` that the trainer picks for ``cfg`` (its
    device resolved) with ``threads`` torch threads (default: this process's): the precision's
    default follows the threads per replica."""
    replicas, threads_each = resolve_replicas(
        cfg.replicas, cfg.device, cfg.batch_size, compile=cfg.compile, threads=threads
    )
    return replicas, threads_each, resolve_amp(cfg.amp, cfg.device, threads_each)


def autocast(device: str, amp: bool, *, cache: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device``'s type when ``amp``; ``cache=False`` inside a CUDA-graph
    capture (autocast's weight-cast cache cannot outlive it)."""
    kind = torch.device(device).type
    return torch.autocast(kind, dtype=torch.bfloat16, enabled=amp, cache_enabled=cache)
