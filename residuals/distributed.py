"""Scale-out with ``torch.distributed``: the process group that ``torchrun`` describes, rank
helpers, collectives that never hang, sharding, and the data-parallel step of the trainer.

Nothing here launches processes: ``torchrun`` (or ``srun torchrun`` on Slurm) starts one
process per GPU (or per CPU socket) and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_from_env` joins the group they describe,
with NCCL for CUDA tensors and gloo on CPUs, and a timeout on every collective
(:data:`TIMEOUT_ENV`). ``docs/distributed.md`` has the commands and the guarantees.

The trainer's data parallelism (:class:`DataParallel`), for a global batch of ``n`` images
split into rank shards ``k = 0..K-1`` of ``n_k`` images (``torch.tensor_split``, so the
shards are those of :class:`residuals.replicas.Replicas` with ``K`` replicas):

1. every rank draws the same permutation and augmentation (one seed), so every rank holds
   the single-process run's global batch; rank ``k`` trains on shard ``k``;
2. rank ``k`` backpropagates ``K * (n_k / n) * mean_loss_k`` through
   ``DistributedDataParallel``, which averages the gradients over the ranks: the result
   is the gradient of the global batch's mean loss, ``sum_k (n_k / n) grad mean_loss_k``;
3. BatchNorm is per rank by default (He et al. 2015 normalised each GPU's share of the
   batch); its running statistics are averaged over the ranks with weights ``n_k / n``
   after every step, as :class:`~residuals.replicas.Replicas` averages its shards'.
   ``sync_bn=True`` converts every BatchNorm to ``torch.nn.SyncBatchNorm`` instead, which
   normalises over the global batch (torch implements it for GPUs only);
4. every shard's mean loss and error count are gathered by every rank and summed in rank
   order, so every rank's history (and the paper warm-up's error-triggered switch) is the
   global batch's, summed as the replicas sum theirs;
5. a batch too small to give every rank :data:`~residuals.replicas.MIN_SHARD` images
   (an epoch's last) uses ``K`` < world shards like the replicas do: the idle ranks add
   zero gradients to an explicit all-reduce.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import inspect
import os
import pickle
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from residuals.replicas import MIN_SHARD

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "TIMEOUT_ENV",
    "DataParallel",
    "DistributedError",
    "Launch",
    "all_gather_object",
    "barrier",
    "broadcast_object",
    "from_rank0",
    "has_batchnorm",
    "init_from_env",
    "is_rank0",
    "launch",
    "local_first",
    "local_device",
    "process_group",
    "rank",
    "shard_bounds",
    "share",
    "world_size",
]

T = TypeVar("T")

TIMEOUT_ENV = "RESIDUALS_DIST_TIMEOUT"  # seconds any one collective may wait for the others
DEFAULT_TIMEOUT_S = 600.0  # long enough for rank 0 to write a checkpoint while the others wait
LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(RuntimeError):
    """A process group that cannot be used as asked; raised on every rank, never a hang."""


# --------------------------------------------------------------------------- the launch
@dataclass(frozen=True)
class Launch:
    """Where this process stands in a ``torchrun`` launch (from its environment)."""

    rank: int  # 0 .. world_size - 1, over all machines
    world_size: int
    local_rank: int  # 0 .. local_world_size - 1 on this machine: its GPU index
    local_world_size: int


def launch(environ: Mapping[str, str] | None = None) -> Launch | None:
    """The launch ``torchrun`` describes in ``environ`` (default ``os.environ``); None when
    the process was not started by a launcher (no ``WORLD_SIZE``)."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return None
    missing = [v for v in LAUNCH_VARS if v not in env]
    if missing:
        raise DistributedError(
            f"WORLD_SIZE is set but {', '.join(missing)} is not: start the "
            "processes with torchrun (see docs/distributed.md)"
        )
    try:
        world = int(env["WORLD_SIZE"])
        r = int(env["RANK"])
        local = int(env["LOCAL_RANK"])
        local_world = int(env.get("LOCAL_WORLD_SIZE", world))
    except ValueError as e:
        raise DistributedError(f"torchrun's environment is not numeric: {e}") from None
    if not (world >= 1 and 0 <= r < world and 0 <= local < local_world):
        raise DistributedError(
            f"inconsistent launch: RANK={r}, WORLD_SIZE={world}, "
            f"LOCAL_RANK={local}, LOCAL_WORLD_SIZE={local_world}"
        )
    return Launch(r, world, local, local_world)


def timeout() -> datetime.timedelta:
    """How long one collective waits for the other ranks: ``$RESIDUALS_DIST_TIMEOUT`` seconds,
    default :data:`DEFAULT_TIMEOUT_S`. A rank that stops answering makes the others fail
    with torch's timeout error after this long instead of hanging."""
    raw = os.environ.get(TIMEOUT_ENV)
    try:
        seconds = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise DistributedError(f"${TIMEOUT_ENV} must be a number of seconds, got {raw!r}") from None
    if not seconds > 0:
        raise DistributedError(f"${TIMEOUT_ENV} must be positive, got {raw!r}")
    return datetime.timedelta(seconds=seconds)


def local_device(device: str) -> str:
    """This rank's device: under a launcher any CUDA device becomes ``"cuda:<LOCAL_RANK>"``
    (one GPU per process, whatever index a resumed run recorded); the CPU stays the CPU."""
    info = launch()
    if info is not None and torch.device(device).type == "cuda":
        if info.local_rank >= torch.cuda.device_count():
            raise DistributedError(
                f"LOCAL_RANK={info.local_rank} but this machine has {torch.cuda.device_count()} "
                "visible GPU(s): start at most that many processes per machine "
                "(torchrun --nproc_per_node)"
            )
        return f"cuda:{info.local_rank}"
    return device


def init_from_env(device: str = "cpu", backend: str | None = None) -> bool:
    """Join the process group that ``torchrun`` describes; True if this call created it.

    No-op (False) without a launcher or when a group is already initialised. ``backend``
    defaults to NCCL for a CUDA ``device`` and gloo otherwise; for CUDA the process's
    current device becomes ``cuda:<LOCAL_RANK>``. Every collective times out after
    :func:`timeout`.
    """
    info = launch()
    if info is None or dist.is_initialized():
        return False
    if not dist.is_available():
        raise DistributedError("this torch build has no torch.distributed")
    cuda = torch.device(device).type == "cuda"
    if backend is None:
        backend = "nccl" if cuda and dist.is_nccl_available() else "gloo"
    kwargs: dict[str, Any] = {}
    if cuda:
        dev = torch.device(local_device("cuda"))
        torch.cuda.set_device(dev)
        if backend == "nccl":
            kwargs["device_id"] = dev  # binds the communicator eagerly: errors show up here
    dist.init_process_group(backend=backend, timeout=timeout(), **kwargs)
    return True


@contextlib.contextmanager
def process_group(device: str = "cpu", backend: str | None = None) -> Iterator[Launch | None]:
    """:func:`init_from_env` for the duration of a ``with`` block (destroyed after, if this
    block created it); yields the launch (None when there is none)."""
    created = init_from_env(device, backend)
    try:
        yield launch() if dist.is_initialized() else None
        if created and dist.is_initialized() and dist.get_world_size() > 1:
            # what still holds the group (a DDP wrapper in a reference cycle, a finished
            # collective's work) goes now, on the main thread of a live interpreter, not at
            # some later collection or during the interpreter's exit
            gc.collect()
            # every rank done before any tears the group down: a gloo rank destroyed while
            # its peer still talks to it can abort the peer ("terminate called without an
            # active exception"). Not after an error: the others may never get here.
            try:
                dist.barrier()
            except RuntimeError:  # the group already broke (a timeout): the work is done
                pass
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()


# --------------------------------------------------------------------------- rank helpers
def world_size() -> int:
    """Ranks in the process group; 1 without one."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank; 0 without a process group."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_rank0() -> bool:
    """Whether this process writes run folders, checkpoints and reports (rank 0, or alone)."""
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def broadcast_object(obj: T, src: int = 0) -> T:
    """``obj`` from rank ``src`` on every rank (pickled; for metadata, not tensors in bulk)."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: T) -> list[T]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


@dataclass
class _Failure:
    """An exception raised on one rank, carried to the others."""

    rank: int
    kind: str
    message: str
    error: bytes | None  # the pickled exception, when it pickles


def _reraise(f: _Failure) -> None:
    if f.error is not None:
        try:
            err = pickle.loads(f.error)
        except Exception:  # noqa: BLE001 - fall back to the message
            err = None
        if isinstance(err, BaseException):
            raise err
    raise DistributedError(f"rank {f.rank} failed: {f.kind}: {f.message}")


def _failure(e: BaseException) -> _Failure:
    try:
        data = pickle.dumps(e)
        pickle.loads(data)  # an exception that pickles but cannot be rebuilt fails here
        blob: bytes | None = data
    except Exception:  # noqa: BLE001 - an exception that does not pickle: its message
        blob = None
    return _Failure(rank(), type(e).__name__, str(e), blob)


def from_rank0(fn: Callable[[], T]) -> T:
    """``fn()`` run on rank 0 only, its result (or its exception) on every rank.

    For what only rank 0 may do (create a run folder, read a checkpoint from its disk)
    and everyone needs: an error raised by ``fn`` is raised on every rank instead of
    leaving the others waiting. Without a process group it is ``fn()``.
    """
    if world_size() == 1:
        return fn()
    box: list[Any] = [None]
    if is_rank0():
        try:
            box[0] = ("ok", fn())
        except Exception as e:  # noqa: BLE001 - re-raised on every rank below
            box[0] = ("error", _failure(e))
    dist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "error":
        _reraise(value)
    return value


def check_all(fn: Callable[[], T]) -> T:
    """``fn()`` on every rank, its result returned; if it raised on any rank, the lowest
    rank's error is raised on all of them, so a check that fails on one rank (a file it
    cannot see) stops every rank with its message instead of leaving the others waiting."""
    result: Any = None
    try:
        result = fn()
        mine: _Failure | None = None
    except Exception as e:  # noqa: BLE001 - gathered, then raised everywhere
        mine = _failure(e)
    if world_size() == 1:
        if mine is not None:
            _reraise(mine)
        return result
    for f in all_gather_object(mine):
        if f is not None:
            _reraise(f)
    return result


def local_first(fn: Callable[[], T]) -> T:
    """``fn()`` on every rank, the first rank of each machine first (a download that the other
    ranks of the machine then find on disk); an error on any rank is raised on all."""
    info = launch()
    if world_size() == 1 or info is None:
        return fn()
    result: list[T] = []
    first = info.local_rank == 0
    check_all(lambda: result.append(fn()) if first else None)
    check_all(lambda: result.append(fn()) if not first else None)
    return result[0]


# --------------------------------------------------------------------------- sharding
def shard_bounds(n: int, parts: int, index: int) -> tuple[int, int]:
    """``[lo, hi)`` of part ``index`` when ``n`` items are cut into ``parts`` contiguous parts
    as ``torch.tensor_split`` cuts them (the first ``n % parts`` parts one item longer);
    empty for ``index >= parts``."""
    if parts < 1 or index < 0:
        raise ValueError(f"shard_bounds needs parts >= 1 and index >= 0, got {parts}, {index}")
    if index >= parts:
        return n, n
    q, r = divmod(n, parts)
    lo = index * q + min(index, r)
    return lo, lo + q + (1 if index < r else 0)


def shard_sizes(n: int, parts: int, ranks: int) -> list[int]:
    """The sizes of :func:`shard_bounds`'s parts for ranks ``0 .. ranks-1`` (0: idle)."""
    return [hi - lo for lo, hi in (shard_bounds(n, parts, r) for r in range(ranks))]


def share(items: Sequence[T], index: int | None = None, parts: int | None = None) -> list[T]:
    """This rank's share of ``items`` (default: :func:`rank` of :func:`world_size`):
    every ``parts``-th item from ``index``, so that a list sorted longest-first gives every
    rank a similar amount of work. Without a process group, all of them."""
    index = rank() if index is None else index
    parts = world_size() if parts is None else parts
    if not 0 <= index < parts:
        raise ValueError(f"share needs 0 <= index < parts, got {index}, {parts}")
    return list(items[index::parts])


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


# --------------------------------------------------------------------------- the trainer's step
class DataParallel:
    """The trainer's data-parallel step over the ranks of the process group (see the module
    docstring); the same interface as :class:`residuals.replicas.Replicas`.

    ``model`` is wrapped in ``DistributedDataParallel``, which at construction copies rank
    0's parameters and buffers to every rank; the caller keeps using ``model`` itself
    (optimiser, checkpoints). With ``sync_bn`` its BatchNorm layers are replaced by
    ``SyncBatchNorm`` in place (same parameters and buffers, same state-dict keys).
    """

    def __init__(self, model: nn.Module, device: str, *, sync_bn: bool = False):
        self.world = world_size()
        if self.world < 2:
            raise DistributedError("DataParallel needs a process group of two or more ranks")
        self.rank = rank()
        self.n = self.world  # model copies over all ranks (the trainer records its replicas)
        self.cuda = torch.device(device).type == "cuda"
        if sync_bn and not self.cuda:
            raise DistributedError(
                "sync_bn: torch implements SyncBatchNorm for GPUs only; on "
                "CPUs BatchNorm is per rank (leave --sync-bn off)"
            )
        self.sync_bn = sync_bn and has_batchnorm(model)
        if self.sync_bn:
            _convert_sync_batchnorm(model)
        self.model = model
        dev = torch.device(device)
        if self.cuda and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        # buffers: DDP copies rank 0's at construction (wanted), and by default before every
        # forward too (not wanted: per-rank BatchNorm statistics are averaged after each step)
        params = inspect.signature(DDP).parameters
        off = {
            "forward_sync_buffers"
            if "forward_sync_buffers" in params  # torch >= 2.13
            else "broadcast_buffers": False
        }
        self.ddp: DDP | None = DDP(model, device_ids=[dev] if self.cuda else None, **off)
        self._params = list(model.parameters())
        self._float_buffers = [b for b in model.buffers() if b.is_floating_point()]
        self._other_buffers = [b for b in model.buffers() if not b.is_floating_point()]
        self._weight = 1.0 / self.world  # this rank's share of the last batch
        self._parts = self.world  # shards of the last batch

    # the trainer enters it like Replicas
    def __enter__(self) -> DataParallel:  # noqa: PYI034 - Self needs Python 3.11
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Let go of the DDP wrapper now, while the group is healthy: it holds the process
        group and its hooks, and the trainer's closures keep this object in a reference
        cycle, which would leave the wrapper to a later garbage collection (during another
        run's collectives, after the group is destroyed, or at interpreter exit)."""
        self.ddp = None

    def threads(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def forward_backward(
        self,
        fn: Callable[[nn.Module, torch.Tensor, torch.Tensor, float], Any],
        x: torch.Tensor,
        y: torch.Tensor,
    ) -> list[tuple[Any, int]]:
        """Steps 1-5: ``fn(net, x_k, y_k, weight)`` on this rank's shard of the global batch
        (x, y); ``fn`` backpropagates ``weight`` times its shard's mean loss and returns
        ``(mean loss, wrong count)``. Returns ``[((mean loss, wrong count), n_k), ...]`` for
        every rank's shard, in rank order, with the global batch's mean-loss gradient in the
        model's ``.grad``."""
        if self.ddp is None:
            raise DistributedError("DataParallel.forward_backward after close()")
        ddp = self.ddp
        n = len(y)
        parts = self.world if self.sync_bn else max(1, min(self.world, n // MIN_SHARD))
        lo, hi = shard_bounds(n, parts, self.rank)
        self._parts, self._weight = parts, (hi - lo) / n
        if ddp.training != self.model.training:
            ddp.train(self.model.training)
        dev = x.device
        if parts == self.world:
            loss, wrong = fn(ddp, x[lo:hi], y[lo:hi], parts * self._weight)
        else:  # some ranks idle: no DDP hooks (they would wait for the idle ranks)
            if hi > lo:
                with ddp.no_sync():
                    loss, wrong = fn(ddp, x[lo:hi], y[lo:hi], self._weight)
            else:
                loss = torch.zeros((), device=dev)
                wrong = torch.zeros((), dtype=torch.int64, device=dev)
            self._sum_gradients()
        # every shard's (mean loss, wrong count, size), in rank order: the caller sums them as
        # it sums the replicas' shards, in the same order and precision
        mine = torch.stack([loss.detach().double(), wrong.double()])
        rows = [torch.empty_like(mine) for _ in range(self.world)]
        dist.all_gather(rows, mine)
        return [
            ((row[0].float(), row[1].long()), size)
            for row, size in zip(rows, shard_sizes(n, parts, self.world))
            if size > 0
        ]

    @torch.no_grad()
    def _sum_gradients(self) -> None:
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self._params]
        for p, g in zip(self._params, grads):
            p.grad = g
        flat = torch._utils._flatten_dense_tensors(grads)
        dist.all_reduce(flat)
        for g, s in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
            g.copy_(s)

    @torch.no_grad()
    def after_step(self) -> None:
        """Per-rank BatchNorm: running statistics averaged over the last step's shards
        (weights ``n_k / n``), integer buffers (batches tracked) from rank 0."""
        if self._float_buffers and not self.sync_bn:
            flat = torch._utils._flatten_dense_tensors(self._float_buffers)
            flat.mul_(self._weight)
            dist.all_reduce(flat)
            for b, s in zip(
                self._float_buffers,
                torch._utils._unflatten_dense_tensors(flat, self._float_buffers),
            ):
                b.copy_(s)
        if self._other_buffers and self._parts < self.world:
            for b in self._other_buffers:  # the idle ranks did not count the batch
                dist.broadcast(b, src=0)


def _convert_sync_batchnorm(model: nn.Module) -> None:
    """Replace every BatchNorm below ``model`` by a SyncBatchNorm sharing its tensors."""
    for name, child in model.named_children():
        converted = nn.SyncBatchNorm.convert_sync_batchnorm(child)
        if converted is not child:
            setattr(model, name, converted)
