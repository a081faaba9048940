"""The collectives of a distributed hist fit, over the caller's torch.distributed process group.

A booster fitted with ``distributed=True`` inside an initialised process group
(``torch.distributed.init_process_group``, e.g. under ``torchrun``; gloo on
CPUs, NCCL on GPUs) holds one shard of the rows per rank. Everything the ranks
must agree on goes through :class:`Collective`:

* **agreement with errors** (:meth:`Collective.agree`): each rank runs a local
  check and every rank learns every rank's outcome, so a bad shard (no rows, a
  different number of features, different estimator parameters) raises a clear
  error on *every* rank instead of leaving the others waiting in a collective;
* **exact sums** (:meth:`Collective.exact_sums`, :meth:`Collective.on_grid`):
  values are put on a fixed-point grid ``k * 2**-e`` whose power of two is
  agreed by all ranks (from the global ``max |x|``) and sized from the total row
  count ``n``, so that no sum of up to ``n`` values can round. A sum over the
  rows then has the same bits whatever the order of its terms -- and so
  whatever the number of ranks and where the shards are cut. This is the
  fixed-point form of the integer gradients of :mod:`._quantized` (LightGBM's
  and XGBoost's quantized training): ``on_grid`` keeps float64 values (the C
  histogram loops add them exactly when every partial sum stays below
  ``2**53`` grid steps); ``exact_sums`` adds int64 grid counts;
* **gathers** of rows in rank order (:meth:`Collective.gather_rows`), for what
  is not a sum: the rows binning subsamples, and order statistics (medians).

Every collective waits at most ``timeout`` (the process group's own timeout,
``init_process_group(timeout=...)``), then raises naming the step: a rank that
failed or stopped never leaves the others hanging.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import numpy as np
import torch

from ._grid import INT_BITS, grid_bits, grid_step, to_grid

__all__ = ["Collective", "ShardError"]


class ShardError(ValueError):
    """A rank's shard (or its parameters) disagrees with the others: raised on every rank."""


class Collective:
    """This rank's view of the process group a distributed fit runs in.

    Parameters
    ----------
    group : a ``torch.distributed`` process group, or None for the default one.
    timeout : timedelta or None
        How long any one collective may wait; None: the group's timeout.

    Raises ``RuntimeError`` when torch.distributed has no initialised process group.
    """

    def __init__(self, group=None, timeout: timedelta | None = None):
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                "distributed=True fits one shard of the rows per process, inside an "
                "initialised torch.distributed process group, and none is initialised in "
                "this process: call torch.distributed.init_process_group(...) first (torchrun "
                "sets its environment; see docs/distributed.md), or fit with distributed=False."
            )
        self._dist = dist
        self.group = group
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)
        backend = dist.get_backend(group)
        self.device = (
            torch.device("cuda", torch.cuda.current_device())
            if backend == "nccl"
            else torch.device("cpu")
        )
        self.timeout = timeout if timeout is not None else _group_timeout(dist, group, self.device)
        self.n_total = 0  # rows over all ranks, once agreed (sizes the grids)
        self.offset = 0  # this rank's first row in the data set the shards make up

    # ------------------------------------------------------------ plumbing
    def _wait(self, work, what: str) -> None:
        try:
            work.wait(timeout=self.timeout)
        except RuntimeError as e:
            raise RuntimeError(
                f"distributed fit, rank {self.rank} of {self.world}: {what} did not complete "
                f"within {self.timeout} ({e}); another rank failed or stopped -- its own "
                "error says why."
            ) from e

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum", what: str = "all-reduce"):
        """``tensor`` reduced over the ranks (``op``: "sum", "max" or "min"), in place.

        Returns ``tensor``. A tensor on another device than the backend's goes
        there and back. One rank: nothing to reduce, nothing sent.
        """
        if self.world == 1:
            return tensor
        ops = {
            "sum": self._dist.ReduceOp.SUM,
            "max": self._dist.ReduceOp.MAX,
            "min": self._dist.ReduceOp.MIN,
        }
        moved = tensor if tensor.device == self.device else tensor.to(self.device)
        if not moved.is_contiguous():
            moved = moved.contiguous()
        self._wait(self._dist.all_reduce(moved, ops[op], group=self.group, async_op=True), what)
        if moved is not tensor:
            tensor.copy_(moved)
        return tensor

    def _all_gather(self, tensor: torch.Tensor, what: str) -> list[torch.Tensor]:
        tensor = tensor.to(self.device).contiguous()
        out = [torch.empty_like(tensor) for _ in range(self.world)]
        self._wait(self._dist.all_gather(out, tensor, group=self.group, async_op=True), what)
        return out

    def gather_rows(self, rows, what: str = "gathering rows") -> np.ndarray:
        """Every rank's ``rows`` (numpy, same dtype and trailing shape on every
        rank, any length), concatenated in rank order, on every rank."""
        return np.concatenate(self._gather_parts(rows, what))

    def _gather_parts(self, rows, what: str) -> list[np.ndarray]:
        rows = np.ascontiguousarray(rows)
        if self.world == 1:
            return [rows]
        sizes = self._all_gather(torch.tensor([rows.shape[0]], dtype=torch.int64), what)
        lengths = [int(n) for n in torch.cat(sizes).tolist()]
        padded = np.zeros((max(lengths), *rows.shape[1:]), dtype=rows.dtype)
        padded[: rows.shape[0]] = rows
        parts = self._all_gather(torch.from_numpy(padded), what)
        return [p.cpu().numpy()[:n] for p, n in zip(parts, lengths)]

    def gather_objects(self, obj: Any, what: str) -> list:
        """Every rank's picklable ``obj``, in rank order (all_gather_object with a timeout)."""
        blob = np.frombuffer(pickle.dumps(obj), dtype=np.uint8)
        return [pickle.loads(part.tobytes()) for part in self._gather_parts(blob, what)]

    # ----------------------------------------------------------- agreement
    def agree(self, what: str, check: Callable[[], Any]) -> list:
        """Run ``check()`` here and learn every rank's outcome; raise on every rank if any failed.

        Returns the list of every rank's ``check()`` result, in rank order. A
        rank whose check raised re-raises its own exception; the others raise
        :class:`ShardError` naming that rank and its message.
        """
        error = None
        try:
            status = (True, check())
        except Exception as e:  # noqa: BLE001 -- reported to every rank below, then re-raised
            error, status = e, (False, f"{type(e).__name__}: {e}")
        statuses = self.gather_objects(status, what)
        if error is not None:
            raise error
        failed = [(r, message) for r, (ok, message) in enumerate(statuses) if not ok]
        if failed:
            r, message = failed[0]
            raise ShardError(
                f"distributed fit, {what}: rank {r} of {self.world} failed ({message}); "
                f"rank {self.rank} stops too."
            )
        return [value for _, value in statuses]

    def any(self, flag: bool, what: str) -> bool:
        """True on every rank when ``flag`` is True on any rank."""
        return bool(self.all_reduce(torch.tensor([float(flag)]), "max", what).item())

    # ---------------------------------------------------------- exact sums
    def _steps(self, tops: list[float], bits: int, what: str) -> list[float]:
        """Grid steps from the global maxima of ``tops`` (one collective)."""
        tops_t = self.all_reduce(torch.tensor(tops, dtype=torch.float64), "max", what)
        return [grid_step(t, bits) for t in tops_t.tolist()]

    def on_grid(
        self, *columns: torch.Tensor | None, what: str = "the gradients' grid"
    ) -> tuple[list, list]:
        """Each column (a float64 tensor, or None) rounded to its grid (see the module
        docstring), and the grid steps: float sums of up to ``n_total`` grid values are
        exact, and ``value / step`` is an integer (the quantized histograms' units)."""
        present = [c for c in columns if c is not None]
        tops = [float(c.abs().max()) if c.numel() else 0.0 for c in present]
        found = iter(self._steps(tops, grid_bits(self.n_total), what))
        out: list = []
        steps: list = []
        for c in columns:
            if c is None:
                out.append(None)
                steps.append(None)
                continue
            step = next(found)
            out.append(to_grid(c, step))
            steps.append(step)
        return out, steps

    def exact_sums(
        self,
        values: np.ndarray,
        groups: np.ndarray | None = None,
        n_groups: int = 1,
        what: str = "exact sums",
    ) -> np.ndarray:
        """``(n_groups, c)`` float64: per group, the sums over every rank's rows of
        ``values`` ``(n, c)``, each column on its int64 grid: the same bits at any
        number of ranks. ``groups``: (n,) ints in ``[0, n_groups)``, None for one group."""
        values = np.asarray(values, dtype=np.float64)  # (n, c), n may be 0
        tops = list(np.abs(values).max(0)) if values.shape[0] else [0.0] * values.shape[1]
        steps = np.array(
            self._steps([float(t) for t in tops], grid_bits(self.n_total, INT_BITS), what)
        )
        counts = np.rint(values / steps).astype(np.int64)
        if groups is None:
            sums = torch.from_numpy(counts.sum(0, keepdims=True))
        else:
            sums = torch.zeros((n_groups, values.shape[1]), dtype=torch.int64)
            sums.index_add_(0, torch.as_tensor(groups, dtype=torch.int64), torch.from_numpy(counts))
        self.all_reduce(sums, "sum", what)
        return sums.numpy().astype(np.float64) * steps


def _group_timeout(dist, group, device: torch.device) -> timedelta:
    """The process group's own timeout (``init_process_group(timeout=...)``)."""
    try:
        g = group if group is not None else dist.group.WORLD
        return g._get_backend(device).options._timeout  # private, hence the fallback
    except Exception:  # noqa: BLE001 -- a private API: any failure falls back
        return dist.default_pg_timeout
