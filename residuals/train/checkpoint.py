"""Checkpoints: one file per run, written atomically after every epoch, holding model,
optimiser, schedule and RNG states and the history; read back for a bit-for-bit resume.

A checkpoint carries its own integrity check. The file is::

    MAGIC (21 bytes) | SHA-256 of the payload (32 bytes) | payload length (8 bytes, LE) | payload

where the payload is ``torch.save`` of the state. :func:`load_checkpoint` refuses a file
whose length or checksum does not match -- bytes overwritten on disk, a copy cut short --
with a message naming the file and saying that deleting it restarts that run; a resume
never goes on silently from damaged weights. Files from before the check (a bare
``torch.save`` zip) are still read, unchecked. The state is serialised in memory before
anything is written, so a full disk fails as an ``OSError`` (ENOSPC) from the write
itself, never as a half-written file or an error from inside torch's writer.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
from dataclasses import MISSING, asdict, fields
from pathlib import Path

import torch

from residuals.data import ImageData
from residuals.runs.atomic import atomic_write
from residuals.train.config import TrainConfig, TrainError

__all__ = ["CHECKPOINT_FORMAT", "MAGIC", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_FORMAT = 1
MAGIC = b"residuals checkpoint\n"
_HEADER = len(MAGIC) + 32 + 8
_RESTART = "Delete it, and that run starts over from its first epoch."


def save_checkpoint(state: dict, path: str | os.PathLike) -> None:
    """Write ``state`` to ``path`` atomically with its checksum (see the module docstring)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getbuffer()
    header = MAGIC + hashlib.sha256(payload).digest() + len(payload).to_bytes(8, "little")
    atomic_write(path, lambda f: (f.write(header), f.write(payload)))


def _payload(data: bytes, path) -> bytes:
    """The verified torch payload of a checkpoint file's bytes (TrainError if damaged)."""
    if not data:
        raise TrainError(
            f"cannot read checkpoint {path}: the file is empty (0 bytes), so the "
            f"write that made it never finished. {_RESTART}"
        )
    if not data.startswith(MAGIC):
        return data  # a checkpoint written before the checksum (or not one at all: torch says)
    if len(data) < _HEADER:
        raise TrainError(
            f"checkpoint {path} is cut short ({len(data)} bytes, less than its header). {_RESTART}"
        )
    digest = data[len(MAGIC) : len(MAGIC) + 32]
    length = int.from_bytes(data[len(MAGIC) + 32 : _HEADER], "little")
    payload = data[_HEADER:]
    if len(payload) != length:
        raise TrainError(
            f"checkpoint {path} is damaged: it holds {len(payload)} bytes of state "
            f"where its header says {length} (a copy cut short?). {_RESTART}"
        )
    if hashlib.sha256(payload).digest() != digest:
        raise TrainError(
            f"checkpoint {path} is damaged: its SHA-256 checksum does not match "
            f"its contents (bytes changed on disk since it was written). {_RESTART}"
        )
    return payload


def _cause(e: BaseException) -> str:
    """What torch's error says is wrong, in a line, without its advice to load with
    weights_only=False (which would run any code a tampered file holds)."""
    text = str(e).strip()
    if "WeightsUnpickler error:" in text:  # the unpickler's own reason, e.g. "Unsupported operand"
        after = text.split("WeightsUnpickler error:", 1)[1].strip().splitlines()
        return f"not a torch checkpoint ({after[0].strip() if after else 'unpickling failed'})"
    first = text.splitlines()[0] if text else ""
    first = re.split(r"(?<=\.)\s", first)[0]  # its first sentence
    first = re.sub(r"[^.]*weights_only[^.]*\.?", "", first).strip(" .:;")
    return first or type(e).__name__


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by :func:`train` (tensors are loaded onto the CPU), after
    checking its length and checksum; :class:`TrainError` names the file and the remedy."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise TrainError(f"cannot read checkpoint {path}: {e.strerror or e}. {_RESTART}") from e
    payload = _payload(data, path)
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        refused = re.search(r"unsupported global:?\s*(?:GLOBAL\s+)?([\w.]+)", str(e), re.IGNORECASE)
        if refused is None:  # not a pickle of anything
            raise TrainError(f"cannot read checkpoint {path}: {_cause(e)}. {_RESTART}") from e
        # torch refused an object that is not plain data: say so, and never suggest loading it
        raise TrainError(
            f"checkpoint {path} holds Python objects other than tensors and plain "
            f"data (it names {refused.group(1)}), which are never loaded: "
            f"unpickling them could run any code the file contains. {_RESTART}"
        ) from e
    except Exception as e:  # truncated, not a torch file, ...
        raise TrainError(f"cannot read checkpoint {path}: {_cause(e)}. {_RESTART}") from e
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise TrainError(
            f"{path} is not a residuals training checkpoint (format "
            f"{CHECKPOINT_FORMAT}). {_RESTART}"
        )
    return state


def _data_signature(data: ImageData) -> dict[str, object]:
    return {
        "name": data.name,
        "split": data.split,
        "n_train": len(data.train_y),
        "n_eval": len(data.test_y),
        "augment": data.augment,
        "image_size": data.image_size,
    }


#: Settings a resume may change: more epochs continue the run with a re-planned schedule.
RESUMABLE = ("epochs",)


def _check_compatible(state: dict, cfg: TrainConfig, data: ImageData, path: Path) -> None:
    """Refuse to resume from a checkpoint written by another run, listing every difference;
    more ``epochs`` are allowed (the run goes on), fewer than it has trained are not.
    A setting the checkpoint does not name (added to :class:`TrainConfig` after it was
    written) is taken at its default, which is what that run trained with."""
    saved, now = dict(state["config"]), asdict(cfg)
    for f in fields(TrainConfig):  # a checkpoint from before a setting existed trained with
        if f.name not in saved and f.default is not MISSING:  # its default
            saved[f.name] = f.default
    for key in ("amp", "replicas"):  # left to the default then, and recorded as resolved
        if saved.get(key) is None and key in state:
            saved[key] = state[key]
            if now[key] is None:
                now[key] = state[key]
    diff = [
        f"{k}: {saved.get(k)!r} in the checkpoint, {now[k]!r} now"
        for k in now
        if k not in RESUMABLE and saved.get(k) != now[k]
    ]
    sig = _data_signature(data)
    diff += [
        f"data {k}: {state['data'].get(k)!r} in the checkpoint, {v!r} now"
        for k, v in sig.items()
        if state["data"].get(k) != v and (k in state["data"] or k != "image_size")
    ]
    done = len(state["history"])
    if cfg.epochs < done:
        diff.append(
            f"epochs: {cfg.epochs} asked for, but the checkpoint has trained {done}; "
            f"ask for {done} or more"
        )
    if diff:
        raise TrainError(
            f"checkpoint {path} was written by a different run, so it cannot be "
            "resumed exactly:\n  "
            + "\n  ".join(diff)
            + "\nUse the same settings (only --epochs may grow), another checkpoint "
            "path, or resume=False."
        )


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
