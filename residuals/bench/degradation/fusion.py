"""The fused-job planner: which runs of a sweep train together as one fused model.

A degradation sweep is fusion's ideal case (:mod:`residuals.train.fused`): every
seed of a depth has the same shapes, and a plain net is its residual twin
without the addition. So the planner groups the runs by depth -- seeds, and
plain with residual -- and cuts each group into jobs no larger than the GPU
memory allows: :func:`member_bytes` estimates one member's training footprint
from the net's real activation shapes, and a job gets at most
``budget // member_bytes`` members, the budget being :data:`MEMORY_FRACTION` of
the device's free memory shared by the jobs that run at once. Each job then
runs in one worker process (several jobs may share the GPU, as unfused runs
do); runs.csv keeps one row per run and names the job that trained it.

``--fuse auto`` fuses on CUDA; on a CPU only if :data:`residuals.train.fused.FUSE_CPU`
(measured: see benchmarks/README.md, "Fused training").
"""

from __future__ import annotations

from dataclasses import dataclass

from residuals.bench.degradation.config import DegradationConfig, RunSpec

__all__ = [
    "FUSE_CHOICES",
    "MAX_MEMBERS",
    "MEMORY_FRACTION",
    "FusedJob",
    "member_bytes",
    "plan_jobs",
    "resolve_fuse",
]

FUSE_CHOICES = ("auto", "on", "off")
MAX_MEMBERS = 32  # members of one fused job at most (the table goes to 24)
MEMORY_FRACTION = 0.6  # of the free device memory, shared by the jobs running at once
SAVED_PER_OUTPUT = 2.0  # tensors autograd keeps per layer output (input of the next op, mask)
STATE_PER_PARAMETER = 4  # parameter, gradient, momentum, the fused forward's reshaped copy


@dataclass(frozen=True)
class FusedJob:
    """Runs trained together (one member each) in one fused model; ``name`` goes in runs.csv."""

    index: int
    specs: tuple[RunSpec, ...]

    @property
    def name(self) -> str:
        return f"job{self.index:02d}"

    @property
    def depth(self) -> int:
        return self.specs[0].depth


def resolve_fuse(fuse: str | bool | None, device: str) -> bool:
    """``--fuse``: ``on``/``off``, or ``auto`` (None): on CUDA, and on a CPU where measured faster."""
    from residuals.train.fused import FUSE_CPU

    if isinstance(fuse, bool):
        return fuse
    if fuse in (None, "auto"):
        return str(device).startswith("cuda") or FUSE_CPU
    if fuse not in FUSE_CHOICES:
        raise ValueError(f"fuse must be one of {FUSE_CHOICES}, got {fuse!r}")
    return fuse == "on"


def member_bytes(
    depth: int, image_shape: tuple[int, int, int], num_classes: int, batch_size: int, *, amp: bool
) -> int:
    """Device memory one member of a fused job needs while training, estimated in bytes.

    Activations: every layer output of one image (measured with forward hooks on
    the CPU), times the batch, times :data:`SAVED_PER_OUTPUT`, in bf16 or fp32;
    plus :data:`STATE_PER_PARAMETER` fp32 copies of the parameters.
    """
    import torch

    from residuals.nets import cifar_resnet

    net = cifar_resnet(depth, in_channels=image_shape[0], num_classes=num_classes)
    elements = 0

    def count(module, inputs, out) -> None:
        nonlocal elements
        elements += out.numel()

    leaves = [m for m in net.modules() if not list(m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad():
            net(torch.zeros(1, *image_shape))
    finally:
        for h in handles:
            h.remove()
    params = sum(p.numel() for p in net.parameters())
    per_element = 2 if amp else 4
    return int(
        elements * batch_size * SAVED_PER_OUTPUT * per_element + params * 4 * STATE_PER_PARAMETER
    )


def plan_jobs(
    specs: list[RunSpec],
    cfg: DegradationConfig,
    *,
    fuse: bool,
    image_shape: tuple[int, int, int] = (3, 32, 32),
    num_classes: int = 10,
    amp: bool = True,
    memory_bytes: int | None = None,
    concurrent: int = 1,
    max_members: int = MAX_MEMBERS,
) -> list[FusedJob]:
    """The sweep's ``specs`` as jobs, the most expensive first.

    Without ``fuse`` every run is a job of its own. With it, runs of one depth
    share jobs of at most ``max_members`` members, and at most
    ``MEMORY_FRACTION * memory_bytes / concurrent // member_bytes`` when the device's free
    memory ``memory_bytes`` is known (at least one member per job).
    """
    if not fuse:
        groups = [[s] for s in specs]
    else:
        by_depth: dict[int, list[RunSpec]] = {}
        for s in specs:
            by_depth.setdefault(s.depth, []).append(s)
        groups = []
        for depth, members in by_depth.items():
            size = max_members
            if memory_bytes is not None:
                need = member_bytes(depth, image_shape, num_classes, cfg.train.batch_size, amp=amp)
                size = max(1, min(size, int(MEMORY_FRACTION * memory_bytes / concurrent) // need))
            # equal shares: 10 runs at 8 a job make jobs of 5 and 5, not 8 and 2
            n_jobs = -(-len(members) // size)
            share = -(-len(members) // n_jobs)
            groups += [members[i : i + share] for i in range(0, len(members), share)]
    groups.sort(key=lambda g: (-g[0].depth * len(g), g[0].seed))
    return [FusedJob(i, tuple(g)) for i, g in enumerate(groups)]
