"""Terminal progress of a sweep: a line per finished epoch, with an ETA from measured speed."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from residuals.bench.degradation.config import DegradationConfig, RunSpec
from residuals.bench.degradation.training import RunOutcome

__all__ = ["Progress"]


class Progress:
    """Terminal progress: a line per finished epoch with the sweep's ETA.

    Work is counted as ``depth x epochs`` (an epoch's cost grows with depth). The
    ETA divides the work left by a measured rate: the wall-clock rate since the
    first reported epoch once that window spans two epochs (it then includes
    evaluation, probes and every parallel worker); before that, the training
    speed of the epochs seen so far times the number of busy workers.
    """

    def __init__(
        self,
        todo: list[RunSpec],
        cfg: DegradationConfig,
        *,
        n_total: int,
        jobs: int = 1,
        echo: Callable[[str], None] = print,
    ):
        self.cfg, self.echo, self.jobs = cfg, echo, max(1, jobs)
        self.n_total, self.n_todo = n_total, len(todo)
        self.n_finished = 0  # runs finished in this session
        self.total_work = sum(s.depth * cfg.train.epochs for s in todo)
        self.work_done = 0.0  # depth x epochs reported in this session
        self.train_seconds = 0.0  # their training time
        self.n_epochs = 0
        self.seen: set[RunSpec] = set()
        self.first: tuple[float, float] | None = None  # (time, work done) at the first report
        self.start = time.perf_counter()

    def _eta(self) -> str:
        now = time.perf_counter()
        left = max(self.total_work - self.work_done, 0.0)
        assert self.first is not None  # set by the first epoch() before any ETA
        t0, w0 = self.first
        mean_epoch_s = self.train_seconds / self.n_epochs
        if now - t0 >= 2 * mean_epoch_s and self.work_done > w0:
            rate = (self.work_done - w0) / (now - t0)
        elif self.train_seconds > 0:
            busy = max(1, min(self.jobs, self.n_todo - self.n_finished))
            rate = self.work_done / self.train_seconds * busy
        else:
            return "?"
        return _hms(left / rate)

    def epoch(self, spec: RunSpec, record: dict) -> None:
        if spec not in self.seen:  # a resumed run: its earlier epochs are done
            self.seen.add(spec)
            self.total_work -= spec.depth * (int(record["epoch"]) - 1)
        self.work_done += spec.depth
        self.train_seconds += float(record["seconds"])
        self.n_epochs += 1
        if self.first is None:
            self.first = (time.perf_counter(), self.work_done)
        self.echo(
            f"  {spec.label:>10} seed {spec.seed}  epoch {int(record['epoch']):>3}/{self.cfg.train.epochs}"
            f"  train err {_pct(record['train_error'])}  test err {_pct(record['test_error'])}"
            f"  {record['images_per_s']:,.0f} img/s  {record['seconds']:.1f} s"
            f"  | elapsed {_hms(time.perf_counter() - self.start)}  ETA {self._eta()}"
        )

    def finished(self, outcome: RunOutcome) -> None:
        self.n_finished += 1
        s = outcome.summary
        self.echo(
            f"[{self.n_total - self.n_todo + self.n_finished}/{self.n_total}] {outcome.spec.label} "
            f"seed {outcome.spec.seed} {s['status']}: train err {_pct(s['final_train_error'])}, "
            f"test err {_pct(s['final_test_error'])}, {s['wall_s']:.1f} s, "
            f"{s['images_per_s']:,.0f} img/s"
        )


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _pct(x: float) -> str:
    return "  nan" if x is None or not math.isfinite(x) else f"{100 * x:5.1f}%"
