"""Data parallelism on a multi-core CPU: each batch split between model replicas, one thread each.

Why. Torch's default on a CPU is one model and intra-op threads: every
operator is split between the cores, which join before the next one. A bf16
ResNet-56 training step is 1,266 ATen operators, so the cores spend much of
the step waiting for each other, and on a shared machine a descheduled thread
stalls all of them (``residuals.device.resolve_amp`` has the bf16 case). Giving
each core a whole model instead, and a share of the batch, leaves one join per
step: on a shared 2-core CPU two one-thread replicas trained ResNet-20/56
faster than one model on two threads (the trainer's ablation in
benchmarks/README.md, "Latest figures: CPU").

What changes. He et al. 2015 (sec. 4.2) trained the CIFAR-10 ResNets "with a
mini-batch size of 128 on two GPUs": BatchNorm normalised each GPU's 64
images. Replicas do the same: replica ``k``'s BatchNorm normalises its own
shard. Everything else is the one-model step:

for a batch of ``n`` images split into shards ``k = 0..K-1`` of ``n_k`` images,

1. replica ``k`` (replica 0 being the model itself, run by the calling
   thread) computes the gradient of ``(n_k / n) * mean_loss_k``; their sum is
   the gradient of the batch's mean loss;
2. the gradients are summed into the model's in the order ``0, 1, ..., K-1``,
   whatever order the threads finished in, so a run is deterministic;
3. the caller's optimiser steps the model (:meth:`Replicas.after_step` then
   copies it out);
4. BatchNorm running statistics are averaged over the shards (weights
   ``n_k / n``: the running mean tracks the whole batch's mean) into the model,
   and the model's parameters and buffers are copied to every replica.

Shards have at least :data:`MIN_SHARD` images (BatchNorm cannot normalise one
image in training mode), so a small last batch uses fewer replicas.

Determinism: the steps above give the same bits whatever order the threads
run in, for models that draw no random numbers in their forward pass (every
model of :mod:`residuals.nets`). Dropout, say, would draw from torch's global
generator, which the threads share in no fixed order.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch
from torch import nn

__all__ = ["MIN_SHARD", "Replicas"]

MIN_SHARD = 2  # images per replica's shard: BatchNorm in training mode needs more than one

T = TypeVar("T")


class Replicas:
    """``n`` copies of ``model`` for data-parallel steps on the CPU; copy 0 is ``model`` itself.

    The others are made with ``copy.deepcopy`` (hooks included) and follow the
    model: its parameters and buffers after every step, its train/eval mode
    before every step.

    ``threads_each`` torch threads run each replica: the calling thread's count
    is set inside :meth:`threads` (so evaluation between epochs keeps the
    default), the workers' once when they start. Use as a context manager, or
    call :meth:`close`, to stop the worker threads.
    """

    def __init__(self, model: nn.Module, n: int, threads_each: int = 1):
        if n < 2:
            raise ValueError(f"Replicas needs n >= 2 (n=1 is the plain loop), got {n}")
        if threads_each < 1:
            raise ValueError(f"threads_each must be >= 1, got {threads_each}")
        self.n = n
        self.threads_each = threads_each
        self.models = [model] + [copy.deepcopy(model) for _ in range(n - 1)]
        self._params = [list(m.parameters()) for m in self.models]
        self._float_buffers = [
            [b for b in m.buffers() if b.is_floating_point()] for m in self.models
        ]
        self._other_buffers = [
            [b for b in m.buffers() if not b.is_floating_point()] for m in self.models
        ]
        self._weights: list[float] = [1.0]  # shard weights of the last step
        self._pool = ThreadPoolExecutor(
            n - 1,
            thread_name_prefix="residuals-replica",
            initializer=torch.set_num_threads,
            initargs=(threads_each,),
        )
        for params in self._params[1:]:  # the copies' gradients are set afresh every step
            for p in params:
                p.grad = None
        self.broadcast()

    # ----------------------------------------------------------------- lifecycle
    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def __enter__(self) -> Replicas:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def threads(self) -> Iterator[None]:
        """The calling thread runs ``threads_each`` torch threads inside; its count is restored after."""
        before = torch.get_num_threads()
        torch.set_num_threads(self.threads_each)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    # ----------------------------------------------------------------- the step
    def forward_backward(
        self,
        fn: Callable[[nn.Module, torch.Tensor, torch.Tensor, float], T],
        x: torch.Tensor,
        y: torch.Tensor,
    ) -> list[tuple[T, int]]:
        """Steps 1-2: ``fn(replica, x_k, y_k, n_k / n)`` on each shard, each replica in its own
        thread; ``fn`` must backpropagate ``(n_k / n) * (mean loss of the shard)``. Returns
        ``[(fn's result, n_k), ...]`` in shard order, with the summed gradients in the model.

        An exception in any shard is raised once every shard has finished (the lowest shard's).
        """
        n = len(y)
        k = max(1, min(self.n, n // MIN_SHARD))
        xs, ys = x.tensor_split(k), y.tensor_split(k)
        self._weights = [len(s) / n for s in ys]
        training = self.models[0].training
        for model, params in zip(self.models[1:k], self._params[1:k]):
            if model.training != training:  # the caller sets the model's mode (train/eval)
                model.train(training)
            for p in params:
                p.grad = None
        futures = [
            self._pool.submit(fn, self.models[i], xs[i], ys[i], self._weights[i])
            for i in range(1, k)
        ]
        outcomes: list[tuple[bool, object]] = []
        try:
            outcomes.append((True, fn(self.models[0], xs[0], ys[0], self._weights[0])))
        except BaseException as e:  # noqa: BLE001 - raised below, after the other shards
            outcomes.append((False, e))
        for f in futures:
            err = f.exception()
            outcomes.append((False, err) if err is not None else (True, f.result()))
        for ok, value in outcomes:
            if not ok:
                raise value  # type: ignore[misc]
        self._sum_gradients(k)
        return [(value, len(s)) for (_, value), s in zip(outcomes, ys)]  # type: ignore[misc]

    @torch.no_grad()
    def _sum_gradients(self, k: int) -> None:
        target = self._params[0]
        for i in range(1, k):
            pairs = [(t, p) for t, p in zip(target, self._params[i]) if p.grad is not None]
            for t, p in pairs:
                if t.grad is None:  # a parameter only this shard's graph reached
                    t.grad = torch.zeros_like(p.grad)
            if pairs:
                torch._foreach_add_([t.grad for t, _ in pairs], [p.grad for _, p in pairs])

    @torch.no_grad()
    def after_step(self) -> None:
        """Steps 3-4, after the optimiser stepped the model: BatchNorm statistics averaged over
        the last step's shards into the model, then everything copied to the replicas."""
        k = len(self._weights)
        if k > 1 and self._float_buffers[0]:
            # the weighted sum in shard order: sum_i w_i * b_i, starting from w_0 * b_0
            target = self._float_buffers[0]
            torch._foreach_mul_(target, self._weights[0])
            for i in range(1, k):
                torch._foreach_add_(target, self._float_buffers[i], alpha=self._weights[i])
        self.broadcast()

    @torch.no_grad()
    def broadcast(self) -> None:
        """Copy the model's parameters and buffers to every replica."""
        for i in range(1, self.n):
            for src, dst in (
                (self._params[0], self._params[i]),
                (self._float_buffers[0], self._float_buffers[i]),
                (self._other_buffers[0], self._other_buffers[i]),
            ):
                if src:
                    torch._foreach_copy_(dst, src)
