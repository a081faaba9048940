"""What a degradation sweep is: :class:`DegradationConfig`, the presets, the verdict's
constants, and the plan of runs (:class:`RunSpec`, :func:`plan_runs`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

__all__ = ["DEFAULT_PRESET", "PRESETS", "VARIANTS", "DegradationConfig", "RunSpec", "model_label",
           "plan_runs"]

# variant -> does the net have identity shortcuts?
VARIANTS: dict[str, bool] = {"plain": False, "residual": True}

# the verdict's rule, in percentage points of final training error (see module docstring)
DEGRADATION_MARGIN = 1.0     # the deepest plain net must be worse than the shallowest by more than this
SIGNIFICANCE = 2.0           # ... and by more than this many standard errors of the gap (over seeds)
RESIDUAL_TOLERANCE = 1.0     # the deepest residual net may be worse than the shallowest by at most this

RESULT_TABLES = ("results", "runs", "probes")
RUN_KEYS = ["variant", "depth", "seed"]


# --------------------------------------------------------------------------- config
@dataclass(frozen=True)
class DegradationConfig:
    """One sweep: which nets, on what data, with which training recipe.

    Every run of the sweep is ``(variant, depth, seed)`` for each variant in
    ``variants``, depth in ``depths`` and seed in ``range(seeds)``; all runs share
    the recipe below (the trainer's :class:`residuals.train.TrainConfig`).
    """

    dataset: str = "digits"
    depths: tuple[int, ...] = (20, 56)           # layers, 6n+2 (He et al. CIFAR nets)
    variants: tuple[str, ...] = ("plain", "residual")
    seeds: int = 2                               # runs use seeds 0 .. seeds-1
    # the recipe
    epochs: int = 12
    batch_size: int = 128                        # images per SGD step
    lr: float = 0.05                             # peak learning rate
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"                     # "cosine" | "step" (/10 at 50% and 75%, the paper's)
    warmup: str = "linear"                       # "linear" | "paper" | "none"
    warmup_epochs: float = 2.0                   # length of the linear warm-up, epochs
    paper_warmup_from_depth: int | None = None   # depths >= this use the paper warm-up (ResNet-110)
    augment: bool | None = None                  # pad + random crop + flip; None: the dataset's default
    val_size: int | None = None                  # training images held out (paper: 5000 of 50000)
    eval_batch_size: int = 1024
    amp: bool | None = None                      # bf16 autocast; None: residuals.train.resolve_amp
    #                                              (CUDA; 1-thread CPU workers with native bf16)
    channels_last: bool = True
    probe_batch: int = 256                       # test images the probes are measured on

    def __post_init__(self):
        # tuples from JSON come back as lists; normalise so configs compare equal
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
        object.__setattr__(self, "variants", tuple(self.variants))
        if not self.depths:
            raise ValueError("depths: give at least one depth")
        if len(set(self.depths)) != len(self.depths):
            raise ValueError(f"depths: each depth once, got {list(self.depths)}")
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown or not self.variants:
            raise ValueError(f"variants: unknown {unknown or 'none given'}; "
                             f"choose from {', '.join(VARIANTS)}")
        if len(set(self.variants)) != len(self.variants):
            raise ValueError(f"variants: each variant once, got {list(self.variants)}")
        if not isinstance(self.seeds, int) or self.seeds < 1:
            raise ValueError(f"seeds: the number of seeds must be at least 1, got {self.seeds!r}")
        if self.probe_batch < 1:
            raise ValueError(f"probe_batch must be at least 1, got {self.probe_batch}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DegradationConfig":
        """Inverse of :meth:`to_dict` (meta.json's ``config``); unknown keys are an error."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"not a degradation config: unknown keys {unknown}")
        return cls(**d)

    def warmup_for(self, depth: int) -> str:
        if self.paper_warmup_from_depth is not None and depth >= self.paper_warmup_from_depth:
            return "paper"
        return self.warmup

    def train_config(self, depth: int, seed: int, device: str):
        """The trainer's config for one run (raises ValueError on an invalid recipe)."""
        from residuals.train import TrainConfig

        return TrainConfig(
            epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, momentum=self.momentum,
            weight_decay=self.weight_decay, schedule=self.schedule, warmup=self.warmup_for(depth),
            warmup_epochs=self.warmup_epochs, augment=self.augment,
            eval_batch_size=self.eval_batch_size, amp=self.amp, channels_last=self.channels_last,
            compile=False,  # measured: torch.compile cost more than a whole run on the CPU
            seed=seed, device=device,
        )


PRESETS: dict[str, DegradationConfig] = {
    # Measured with this preset, seeds 0-4: plain-56 ends at 49.5-76.2% training error,
    # plain-20 at <= 0.15%, resnet-20 and resnet-56 at 0.0%; the whole default sweep (2
    # seeds) took 47 s wall on a shared 2-core CPU. Without the warm-up resnet-56 fails too.
    "digits": DegradationConfig(),
    "fashion-mnist": DegradationConfig(
        dataset="fashion-mnist", depths=(20, 32, 44, 56), seeds=1, epochs=15, lr=0.05,
        warmup="linear", warmup_epochs=2.0,
    ),
    # He et al. 2015, Sec. 4.2: lr 0.1, batch 128, wd 1e-4, momentum 0.9, /10 at 32k
    # and 48k of 64k iterations (~182 epochs on a 45k/5k split), pad-4 crop + flip,
    # option-A shortcuts, and for ResNet-110 lr 0.01 until training error < 80%.
    "paper": DegradationConfig(
        dataset="cifar10", depths=(20, 32, 44, 56, 110), seeds=1, epochs=182, batch_size=128,
        lr=0.1, momentum=0.9, weight_decay=1e-4, schedule="step", warmup="none",
        warmup_epochs=0.0, paper_warmup_from_depth=110, augment=True, val_size=5000,
    ),
}
DEFAULT_PRESET = "digits"


# --------------------------------------------------------------------------- runs
@dataclass(frozen=True, order=True)
class RunSpec:
    """One training run of the sweep."""

    variant: str   # "plain" | "residual"
    depth: int
    seed: int

    @property
    def skip(self) -> bool:
        return VARIANTS[self.variant]

    @property
    def model(self) -> str:
        """The name :func:`residuals.nets.model_name` gives the net: "plain56", "resnet56"."""
        return model_label(self.variant, self.depth).replace("-", "")

    @property
    def label(self) -> str:
        return model_label(self.variant, self.depth)

    @property
    def key(self) -> str:
        return f"{self.model}-seed{self.seed}"


def model_label(variant: str, depth: int) -> str:
    """``plain-56`` / ``resnet-56``: how the report and the verdict name a net."""
    return f"{'resnet' if VARIANTS[variant] else 'plain'}-{int(depth)}"


def plan_runs(cfg: DegradationConfig) -> list[RunSpec]:
    """Every run of the sweep, the most expensive first (deepest, then by seed).

    Longest-first keeps parallel workers busy until the end instead of leaving one
    deep net running alone.
    """
    specs = [RunSpec(v, d, s) for d in cfg.depths for v in cfg.variants for s in range(cfg.seeds)]
    return sorted(specs, key=lambda r: (-r.depth, r.seed, r.variant))
