"""The environment record of a run: package versions, machine facts and the git commit.

Lower layers never import the packages that add facts: a package that wants a fact in every
run's record registers a function with :func:`register_machine_fact` when it is imported (the
booster registers which CPU loops its hist mode runs). A fact whose function returns ``None``
is left out.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["environment_info", "git_commit", "now_iso", "register_machine_fact"]

PACKAGES = ("residuals", "scikit-learn", "torch", "numpy", "pandas", "matplotlib", "click")
_FACTS: dict[str, Callable[[], Any]] = {}


def now_iso() -> str:
    """The current time, local, ISO 8601 with the UTC offset, to the second."""
    return _dt.datetime.now(_dt.UTC).astimezone().isoformat(timespec="seconds")


def register_machine_fact(name: str, fact: Callable[[], Any]) -> None:
    """Add ``machine[name] = fact()`` to every environment record from now on."""
    _FACTS[name] = fact


def git_commit() -> str | None:
    """The commit of the package's checkout (``-dirty`` when tracked files changed), or None."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    commit = out.stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=here,
        capture_output=True,
        text=True,
        timeout=5,
    ).stdout.strip()
    return commit + ("-dirty" if dirty else "")


def environment_info(device: str | None = None) -> dict[str, Any]:
    """Package versions and machine facts, for the record of a run."""
    from importlib import metadata

    versions: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    machine: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "device": device,
    }
    if "torch" in sys.modules:  # never import torch just to describe the machine
        torch = sys.modules["torch"]
        machine["torch_threads"] = torch.get_num_threads()
        if device and str(device).startswith("cuda") and torch.cuda.is_available():
            machine["gpu"] = torch.cuda.get_device_name(torch.device(device))
    for name, fact in _FACTS.items():
        value = fact()
        if value is not None:
            machine[name] = value
    return {"versions": versions, "machine": machine, "git_commit": git_commit()}
