"""The hot loop of a fused model: each member's batch, one fused SGD step, per-member
records, evaluation and checkpoints (see :mod:`residuals.train.fused`)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from residuals.data import ImageData, crop_padding, normalize
from residuals.data.augment import crop_flip, crop_flip_draws
from residuals.device import autocast
from residuals.nets.fused import FusedResNet
from residuals.train.checkpoint import (
    CHECKPOINT_FORMAT,
    _data_signature,
    _rng_state,
    save_checkpoint,
)
from residuals.train.config import EpochRecord, TrainConfig, TrainError
from residuals.train.fused_optim import MemberSchedules, MemberSGD
from residuals.train.steps import (
    GRAPH_WARMUP_STEPS,
    EpochClock,
    StepLoop,
    cudnn_benchmark,
    oom_error,
)


@dataclass
class Member:
    """One member's own state: what the one-net trainer keeps per run."""

    cfg: TrainConfig
    path: Path | None
    augment: str
    generator: torch.Generator
    history: list[EpochRecord]
    diverged: bool = False
    resumed_from: int = 0
    frozen_state: dict | None = None  # its weights when it diverged
    switch: int | None = None  # paper warm-up: first iteration at the full rate


def finished(m: Member) -> bool:
    return m.diverged or len(m.history) >= m.cfg.epochs


# --------------------------------------------------------------------------- the loop
@dataclass
class FusedLoop:
    """The hot loop of a fused model: the one-net trainer's ``StepLoop``, a member axis added."""

    model: FusedResNet
    members: list[Member]  # the live ones, in the fused model's order
    data: ImageData
    steps: int
    amp: bool
    cuda_graph: bool
    optimizer: MemberSGD
    schedules: MemberSchedules

    def __post_init__(self) -> None:
        cfgs = [m.cfg for m in self.members]
        dev = self.data.device
        self.cfg = cfgs[0]
        self.n = len(self.members)
        self.mean = torch.tensor(self.data.mean, dtype=torch.float32, device=dev)
        self.std = torch.tensor(self.data.std, dtype=torch.float32, device=dev)
        self.loss_sum = torch.zeros(self.n, dtype=torch.float64, device=dev)
        self.wrong = torch.zeros(self.n, dtype=torch.int64, device=dev)
        self.pad = crop_padding(self.data.image_size)
        self.crops = [m.augment == "crop-flip" for m in self.members]
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static: tuple[torch.Tensor, torch.Tensor] | None = None
        self.warmup_left = GRAPH_WARMUP_STEPS
        self.side_stream = torch.cuda.Stream(dev) if self.cuda_graph else None

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each member's normalised, augmented images ``(N, B, C, H, W)`` and labels ``(N, B)``
        for its indices ``idx`` ``(N, B)``: one gather, one crop and one normalisation for all."""
        data, (n, b) = self.data, idx.shape
        x = data.train_x.index_select(0, idx.flatten())
        if any(self.crops):
            dev = x.device
            centre = torch.full((b, 1), self.pad, dtype=torch.int64, device=dev)
            draws = [
                crop_flip_draws(b, self.pad, dev, m.generator)
                if crop
                else (centre, centre, torch.zeros((b, 1), dtype=torch.bool, device=dev))
                for m, crop in zip(self.members, self.crops)
            ]
            x = crop_flip(x, self.pad, *(torch.cat(d) for d in zip(*draws)))
        x = normalize(x, self.mean, self.std)
        return x.view(n, b, *x.shape[1:]), data.train_y.index_select(0, idx.flatten()).view(n, b)

    def step(self, xb: torch.Tensor, yb: torch.Tensor, *, capturing: bool = False) -> None:
        """One SGD step of every member on its own batch; loss and error sums on the device."""
        self.optimizer.zero_grad()
        n, b = yb.shape
        with autocast(str(xb.device), self.amp, cache=not capturing):
            logits = self.model(xb)
        losses = (
            F.cross_entropy(logits.float().flatten(0, 1), yb.flatten(), reduction="none")
            .view(n, b)
            .mean(1)
        )
        losses.sum().backward()  # no parameter is shared: each member gets its own gradient
        self.optimizer.step(self.schedules.lr)
        self.loss_sum += losses.detach() * b
        self.wrong += (logits.detach().argmax(2) != yb).sum(1)

    # the one-net loop's CUDA-graph machinery: eager warm-up steps on a side stream, one
    # capture of :meth:`step` on static copies of the batch, replays (eager if capture fails)
    graphed_step = StepLoop.graphed_step  # type: ignore[misc]
    capture = StepLoop.capture  # type: ignore[misc]

    def epoch(self, epoch: int) -> int:
        """Train one epoch (0-based) of every live member. Returns the images each one saw."""
        bsz = self.cfg.batch_size
        self.model.train()
        self.loss_sum.zero_()
        self.wrong.zero_()
        seen = 0
        n_train = len(self.data.train_y)
        perms = torch.stack(
            [
                torch.randperm(n_train, device=self.data.device, generator=m.generator)
                for m in self.members
            ]
        )
        for step in range(self.steps):
            it = epoch * self.steps + step
            idx = perms[:, step * bsz : (step + 1) * bsz]
            xb, yb = self.batch(idx)
            self.schedules.set(it)
            if self.cuda_graph and idx.shape[1] == bsz:
                self.graphed_step(xb, yb)  # type: ignore[misc]
            else:
                self.step(xb, yb)
            seen += idx.shape[1]
            self.schedules.observe(it, self.wrong, seen)
        return seen

    @torch.inference_mode()
    def evaluate(self) -> tuple[list[float], list[float]]:
        """Each member's mean test loss and error (one host read)."""
        self.model.eval()
        x, y, bsz = self.data.test_x, self.data.test_y, self.cfg.eval_batch_size
        if len(y) == 0:
            return [math.nan] * self.n, [math.nan] * self.n
        loss_sum = torch.zeros(self.n, dtype=torch.float64, device=x.device)
        wrong = torch.zeros(self.n, dtype=torch.int64, device=x.device)
        for i in range(0, len(y), bsz):
            xb = normalize(x[i : i + bsz], self.mean, self.std)
            yb = y[i : i + bsz]
            with autocast(str(x.device), self.amp):
                logits = self.model(xb)
            loss_sum += (
                F.cross_entropy(logits.float().flatten(0, 1), yb.repeat(self.n), reduction="none")
                .view(self.n, -1)
                .sum(1)
            )
            wrong += (logits.argmax(2) != yb).sum(1)
        total, errors = torch.stack([loss_sum, wrong.double()]).tolist()
        return [t / len(y) for t in total], [e / len(y) for e in errors]

    def checkpoint(self, k: int, lr: float, *, finished: bool) -> dict[str, object]:
        """Member ``k``'s checkpoint, in the one-net trainer's format."""
        m = self.members[k]
        model = m.frozen_state if m.frozen_state is not None else self.model.member_state_dict(k)
        return {
            "format": CHECKPOINT_FORMAT,
            "config": asdict(m.cfg),
            "data": _data_signature(self.data),
            "model": model,
            "optimizer": self.optimizer.state_dict(k, m.cfg, lr),
            "schedule": {
                "iteration": len(m.history) * self.steps,
                **self.schedules.state_dict(k),
            },
            "rng": _rng_state(str(self.data.device), m.generator),
            "history": [asdict(r) for r in m.history],
            "finished": finished,
            "diverged": m.diverged,
            "amp": self.amp,
            "replicas": 1,
            "torch": str(torch.__version__),
            "fused": {"members": self.n, "index": k},
        }


def run_fused(
    models, data, members, live, momentum, schedule_states, *, spe, amp, cuda, on_epoch
) -> None:
    """Train the ``live`` members (indices into ``models``/``members``) as one fused model."""
    device = str(data.device)
    cfg0 = members[live[0]].cfg
    fused = FusedResNet([models[k] for k in live])
    fused.channels_last = cfg0.channels_last
    cfgs = [members[k].cfg for k in live]
    loop = FusedLoop(
        model=fused,
        members=[members[k] for k in live],
        data=data,
        steps=spe,
        amp=amp,
        cuda_graph=cuda if cfg0.cuda_graph is None else cfg0.cuda_graph,
        optimizer=MemberSGD(fused, cfgs),
        schedules=MemberSchedules(cfgs, spe, device, [schedule_states[k] for k in live]),
    )
    for j, k in enumerate(live):
        if momentum[k] is not None:
            loop.optimizer.load_momentum(j, momentum[k])
    clock = EpochClock(device)
    oom: TrainError | None = None
    first = len(members[live[0]].history)
    try:
        with cudnn_benchmark(device):
            for epoch in range(first, cfg0.epochs):
                clock.start()
                seen = loop.epoch(epoch)
                clock.stop()
                sums = torch.stack([loop.loss_sum, loop.wrong.double(), loop.schedules.lr.double()])
                losses, wrongs, lrs = sums.tolist()  # the epoch's one synchronisation
                seconds = clock.seconds()
                test_losses, test_errors = loop.evaluate()
                for j, m in enumerate(loop.members):
                    if m.diverged:
                        continue  # frozen in an earlier epoch
                    train_loss = losses[j] / seen
                    record = EpochRecord(
                        epoch=epoch + 1,
                        train_loss=train_loss,
                        train_error=wrongs[j] / seen,
                        test_loss=test_losses[j],
                        test_error=test_errors[j],
                        lr=lrs[j],
                        seconds=seconds,
                        images_per_s=seen / seconds if seconds > 0 else math.inf,
                    )
                    m.history.append(record)
                    if not math.isfinite(train_loss):
                        m.diverged = True
                        m.frozen_state = fused.member_state_dict(j)
                        loop.schedules.active[j] = 0.0
                        loop.optimizer.freeze(j)
                    if m.path is not None:
                        save_checkpoint(loop.checkpoint(j, lrs[j], finished=finished(m)), m.path)
                    if on_epoch is not None:
                        on_epoch(live[j], record)
                if all(m.diverged for m in loop.members):
                    break
    except torch.OutOfMemoryError as e:
        oom = oom_error(cfg0, e)
    if oom is not None:
        if cuda:
            torch.cuda.empty_cache()
        raise oom
    for j, k in enumerate(live):
        m = members[k]
        models[k].load_state_dict(
            m.frozen_state if m.frozen_state is not None else fused.member_state_dict(j)
        )
        m.switch = warmup_switch(m.cfg, int(loop.schedules.switch_iteration[j]))


def warmup_switch(cfg: TrainConfig, iteration: int) -> int | None:
    return iteration if cfg.warmup == "paper" and iteration >= 0 else None
