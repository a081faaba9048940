"""What a training run tells its user while it runs: a line per epoch, a progress bar within
each epoch on a terminal, and TensorBoard event files.

* :func:`epoch_line` formats one :class:`~residuals.train.EpochRecord` as the line printed
  after every epoch;
* :class:`ProgressBar` redraws one line on a terminal (``\\r``) while an epoch runs: steps
  done, images/s, the epoch's running loss and its ETA. It reads the loss from the device
  at most every ``interval`` seconds (one synchronisation each time), and draws nothing
  when the stream is not a terminal (a log file gets the epoch lines only);
* :class:`TensorBoardLog` writes per-step loss and learning rate and per-epoch losses,
  errors and images/s (``--tensorboard DIR``). TensorBoard is an optional extra
  (``pip install 'residuals[tensorboard]'``); :func:`open_tensorboard` says so when it is
  missing.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import IO, Any

__all__ = [
    "TENSORBOARD_HINT",
    "ProgressBar",
    "TensorBoardLog",
    "TensorBoardMissing",
    "epoch_line",
    "open_tensorboard",
]

TENSORBOARD_HINT = (
    "--tensorboard needs the TensorBoard package, an optional extra: "
    "pip install 'residuals[tensorboard]' (or pip install tensorboard)"
)


class TensorBoardMissing(ImportError):
    """``--tensorboard`` was asked for but the package is not installed."""


def _hms(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = round(seconds)
    return (
        f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    )


def epoch_line(record: Any, epochs: int) -> str:
    """``epoch  3/10  loss 0.412  train err 14.20%  test loss 0.380  test err 13.10%  ...``."""
    width = len(str(epochs))
    return (
        f"epoch {record.epoch:>{width}}/{epochs}  loss {record.train_loss:.4f}  "
        f"train err {100 * record.train_error:6.2f}%  test loss {record.test_loss:.4f}  "
        f"test err {100 * record.test_error:6.2f}%  lr {record.lr:.3g}  "
        f"{record.images_per_s:,.0f} img/s  {record.seconds:.1f} s"
    )


class ProgressBar:
    """One redrawn line per epoch on a terminal: ``[####......] 120/235 5,210 img/s loss 0.41 ETA 0:22``.

    Called by the trainer after every step with a :class:`~residuals.train.StepProgress`;
    it draws at most every ``interval`` seconds and clears its line before the epoch's
    line is printed (:meth:`clear`).
    """

    WIDTH = 24

    def __init__(
        self,
        stream: IO[str] | None = None,
        *,
        interval: float = 0.5,
        enabled: bool | None = None,
    ):
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            enabled = _is_terminal(self.stream)
        self.enabled = enabled
        self.interval = interval
        self._epoch = -1
        self._t0 = self._last = 0.0
        self._start_step = self._start_seen = 0
        self._drawn = False

    def __call__(self, p: Any) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if p.epoch != self._epoch:  # a new epoch (or a resumed one) starts its clock here
            self._epoch, self._t0, self._last = p.epoch, now, now
            self._start_step, self._start_seen = p.step, p.seen
            return
        if now - self._last < self.interval and p.step + 1 < p.steps:
            return
        self._last = now
        elapsed = now - self._t0
        rate = (p.seen - self._start_seen) / elapsed if elapsed > 0 else math.nan
        left = (p.steps - p.step - 1) * elapsed / max(1, p.step - self._start_step)
        loss = p.running_loss()  # one read of the device's running sum
        filled = int(self.WIDTH * (p.step + 1) / p.steps)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        line = (
            f"  [{bar}] {p.step + 1}/{p.steps}  {rate:,.0f} img/s  loss {loss:.4f}  "
            f"ETA {_hms(left)}"
        )
        self.stream.write("\r" + line + "\x1b[K")
        self.stream.flush()
        self._drawn = True

    def clear(self) -> None:
        """Erase the bar's line (before the epoch's line is printed)."""
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


def open_tensorboard(logdir: str | os.PathLike) -> TensorBoardLog:
    """A :class:`TensorBoardLog` writing into ``logdir``; :class:`TensorBoardMissing` with
    the install command when TensorBoard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:  # torch.utils.tensorboard imports the tensorboard package
        raise TensorBoardMissing(TENSORBOARD_HINT) from e
    return TensorBoardLog(SummaryWriter(log_dir=str(logdir)))


class TensorBoardLog:
    """Scalars in TensorBoard event files, by global step (optimizer steps, as in seed 000).

    Per step: ``train/loss`` and ``train/lr``, and ``train/error`` (the step's batch); per
    epoch (at the epoch's last step): ``epoch/train_loss``, ``epoch/train_error``,
    ``epoch/test_loss``, ``epoch/test_error``, ``epoch/images_per_s``.
    """

    def __init__(self, writer: Any):
        self.writer = writer

    def steps(self, trace: Any) -> None:
        """Write a :class:`~residuals.train.StepTrace` (one epoch's steps)."""
        for it, loss, err, lr in zip(trace.iteration, trace.loss, trace.error, trace.lr):
            step = it + 1
            self.writer.add_scalar("train/loss", loss, step)
            self.writer.add_scalar("train/error", err, step)
            self.writer.add_scalar("train/lr", lr, step)

    def epoch(self, record: Any, iteration: int) -> None:
        for key in (
            "train_loss",
            "train_error",
            "test_loss",
            "test_error",
            "images_per_s",
        ):
            self.writer.add_scalar(f"epoch/{key}", getattr(record, key), iteration)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
