"""Checkpoints: one file per run, written atomically after every epoch, holding model,
optimiser, schedule and RNG states and the history; read back for a bit-for-bit resume."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import torch

from residuals.data import ImageData
from residuals.runs.atomic import atomic_write
from residuals.train.config import TrainConfig, TrainError

__all__ = ["CHECKPOINT_FORMAT", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_FORMAT = 1


def save_checkpoint(state: dict, path: str | os.PathLike) -> None:
    """Write ``state`` to ``path`` atomically (see :mod:`residuals.runs.atomic`)."""
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by :func:`train` (tensors are loaded onto the CPU)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a torch file, ...
        raise TrainError(f"cannot read checkpoint {path}: {e}. Delete it or train with "
                         "resume=False to start over.") from e
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise TrainError(f"{path} is not a residuals training checkpoint (format "
                         f"{CHECKPOINT_FORMAT}); delete it or train with resume=False")
    return state


def _data_signature(data: ImageData) -> dict[str, object]:
    return {"name": data.name, "split": data.split, "n_train": len(data.train_y),
            "n_eval": len(data.test_y), "augment": data.augment}


def _check_compatible(state: dict, cfg: TrainConfig, data: ImageData, path: Path) -> None:
    saved, now = state["config"], asdict(cfg)
    diff = [f"{k}: {saved.get(k)!r} in the checkpoint, {now[k]!r} now"
            for k in now if saved.get(k) != now[k]]
    sig = _data_signature(data)
    diff += [f"data {k}: {state['data'].get(k)!r} in the checkpoint, {v!r} now"
             for k, v in sig.items() if state["data"].get(k) != v]
    if diff:
        raise TrainError(f"checkpoint {path} was written by a different run, so it cannot be "
                         "resumed exactly:\n  " + "\n  ".join(diff)
                         + "\nUse the same settings, another checkpoint path, or resume=False.")


def _rng_state(device: str, data_gen: torch.Generator) -> dict[str, object]:
    state: dict[str, object] = {"torch": torch.get_rng_state(), "data": data_gen.get_state()}
    if torch.device(device).type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(torch.device(device))
    return state


def _set_rng_state(state: dict, device: str, data_gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    data_gen.set_state(state["data"])
    if "cuda" in state and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], torch.device(device))
