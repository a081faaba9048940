"""What a degradation sweep is: :class:`DegradationConfig`, the presets, the verdict's
constants, and the plan of runs (:class:`RunSpec`, :func:`plan_runs`)."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field, fields
from typing import Literal

from residuals.train.config import TrainConfig

__all__ = [
    "DEFAULT_PRESET",
    "PRESETS",
    "PRESET_INFO",
    "VARIANTS",
    "DegradationConfig",
    "Preset",
    "RunSpec",
    "configure",
    "describe_preset",
    "fix_numerics",
    "model_label",
    "plan_runs",
    "verdict_rule",
]

# variant -> does the net have identity shortcuts?
# One bit, named once: a variant (what --variants says) is whether the net has identity
# shortcuts (the nets' ``skip``), and the nets' registry names it "resnet" or "plain"
# (residuals.nets.model_name). Everything below derives its names from this table.
VARIANTS: dict[str, bool] = {"plain": False, "residual": True}  # variant -> skip

# the verdict's rule, in percentage points of final training error (see module docstring)
DEGRADATION_MARGIN = (
    1.0  # the deepest plain net must be worse than the shallowest by more than this
)
SIGNIFICANCE = 2.0  # ... and by more than this many standard errors of the gap (over seeds)
RESIDUAL_TOLERANCE = (
    1.0  # the deepest residual net may be worse than the shallowest by at most this
)

RESULT_TABLES = ("results", "runs", "probes")
RUN_KEYS = ["variant", "depth", "seed"]


# --------------------------------------------------------------------------- config
# the recipe fields meta.json's "config" always records (flat, as run folders always had them);
# any other TrainConfig field is recorded only when it differs from the trainer's default
RECIPE_FIELDS = (
    "epochs",
    "batch_size",
    "lr",
    "momentum",
    "weight_decay",
    "schedule",
    "warmup",
    "warmup_epochs",
    "augment",
    "eval_batch_size",
    "amp",
    "channels_last",
)
_PER_RUN = ("seed", "device")  # set for each run of the sweep, never part of the recipe
_META_ORDER = (
    "dataset",
    "depths",
    "variants",
    "seeds",
    "epochs",
    "batch_size",
    "lr",
    "momentum",
    "weight_decay",
    "schedule",
    "warmup",
    "warmup_epochs",
    "paper_warmup_from_depth",
    "augment",
    "val_size",
    "eval_batch_size",
    "amp",
    "channels_last",
    "probe_batch",
)


def _default_recipe() -> TrainConfig:
    return TrainConfig(epochs=12, lr=0.05, warmup="linear", warmup_epochs=2.0)


@dataclass(frozen=True)
class DegradationConfig:
    """One sweep: which nets, on what data, with which training recipe.

    Every run of the sweep is ``(variant, depth, seed)`` for each variant in
    ``variants``, depth in ``depths`` and ``seeds`` seeds from ``first_seed`` on; all runs share
    the recipe ``train`` (the trainer's :class:`residuals.train.TrainConfig`; its
    ``seed`` and ``device`` are set per run, and depths from
    ``paper_warmup_from_depth`` on use the paper warm-up).
    :meth:`replace` takes the recipe's fields by name too.
    """

    dataset: str = "digits"
    depths: tuple[int, ...] = (20, 32, 44, 56)  # layers, 6n+2 (He et al. CIFAR nets): four
    #                                              points of the error-against-depth curve
    variants: tuple[str, ...] = ("plain", "residual")
    seeds: int = 2  # runs use seeds first_seed .. first_seed+seeds-1
    train: TrainConfig = field(default_factory=_default_recipe)  # the recipe of every run
    paper_warmup_from_depth: int | None = None  # depths >= this use the paper warm-up (ResNet-110)
    val_size: int | None = None  # training images held out (paper: 5000 of 50000)
    probe_batch: int = 256  # test images the probes are measured on
    first_seed: int = 0  # the first run seed (weights, data order)

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
            raise ValueError(
                f"variants: unknown {unknown or 'none given'}; choose from {', '.join(VARIANTS)}"
            )
        if len(set(self.variants)) != len(self.variants):
            raise ValueError(f"variants: each variant once, got {list(self.variants)}")
        if not isinstance(self.seeds, int) or self.seeds < 1:
            raise ValueError(f"seeds: the number of seeds must be at least 1, got {self.seeds!r}")
        if (
            isinstance(self.first_seed, bool)
            or not isinstance(self.first_seed, int)
            or self.first_seed < 0
        ):
            raise ValueError(f"first_seed must be an integer >= 0, got {self.first_seed!r}")
        if self.probe_batch < 1:
            raise ValueError(f"probe_batch must be at least 1, got {self.probe_batch}")
        if not isinstance(self.train, TrainConfig):
            raise ValueError(f"train must be a TrainConfig, got {type(self.train).__name__}")

    def replace(self, **changes) -> DegradationConfig:
        """A copy with ``changes``; the recipe's fields (``epochs``, ``lr``, ...) go to ``train``."""
        recipe = {k: changes.pop(k) for k in list(changes) if k in _RECIPE_NAMES}
        if recipe:
            changes["train"] = dataclasses.replace(changes.get("train", self.train), **recipe)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """meta.json's ``config``: the sweep's fields with the recipe's inline (one flat dict)."""
        recipe = asdict(self.train)
        default = asdict(TrainConfig())
        flat = {name: recipe[name] for name in RECIPE_FIELDS}
        flat.update(
            {
                k: v
                for k, v in recipe.items()
                if k not in RECIPE_FIELDS and k not in _PER_RUN and v != default[k]
            }
        )
        sweep = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name != "train" and not (f.name == "first_seed" and self.first_seed == 0)
        }
        merged = {**{k: list(v) if isinstance(v, tuple) else v for k, v in sweep.items()}, **flat}
        order = [k for k in _META_ORDER if k in merged]
        return {k: merged[k] for k in [*order, *(k for k in merged if k not in _META_ORDER)]}

    @classmethod
    def from_dict(cls, d: dict) -> DegradationConfig:
        """Inverse of :meth:`to_dict` (meta.json's ``config``); unknown keys are an error."""
        sweep_names = {f.name for f in fields(cls)} - {"train"}
        unknown = sorted(set(d) - sweep_names - _RECIPE_NAMES)
        if unknown:
            raise ValueError(f"not a degradation config: unknown keys {unknown}")
        recipe = {k: v for k, v in d.items() if k in _RECIPE_NAMES}
        return cls(train=TrainConfig(**recipe), **{k: v for k, v in d.items() if k in sweep_names})

    def warmup_for(self, depth: int) -> Literal["linear", "paper", "none"]:
        if self.paper_warmup_from_depth is not None and depth >= self.paper_warmup_from_depth:
            return "paper"
        return self.train.warmup

    def train_config(self, depth: int, seed: int, device: str) -> TrainConfig:
        """The trainer's config for one run (raises ValueError on an invalid recipe)."""
        return dataclasses.replace(
            self.train, warmup=self.warmup_for(depth), seed=seed, device=device
        )


_RECIPE_NAMES = frozenset(f.name for f in fields(TrainConfig)) - set(_PER_RUN)


def fix_numerics(
    cfg: DegradationConfig, device: str, *, threads: int | None = None
) -> DegradationConfig:
    """``cfg`` with its precision (``amp``) and CPU data-parallel ``replicas`` resolved for
    ``device`` and ``threads`` torch threads per run (default: this process's). Both change a
    run's numbers (BatchNorm normalises each replica's shard), and their defaults depend on
    the threads, which depend on ``--jobs``: fixed in the run's recorded config when it
    starts, they are the same for every run of the sweep, resumed or not, under any jobs."""
    from residuals.device import resolve_replicas_amp

    replicas, _, amp = resolve_replicas_amp(
        cfg.train_config(cfg.depths[0], 0, device), threads=threads
    )
    return cfg.replace(amp=bool(amp), replicas=int(replicas))


def configure(preset: str = "digits", **overrides) -> DegradationConfig:
    """The config of ``preset`` with ``overrides`` (``None`` values are ignored).

    Two rules keep a shortened or lengthened recipe sensible: a given ``warmup`` applies to
    every depth (the preset's paper warm-up of its deepest nets is dropped), and a linear
    warm-up keeps its share of training when ``epochs`` changes (the default preset's share,
    2 of 12 epochs, when a preset without one is asked for ``warmup="linear"``).
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    cfg = PRESETS[preset]
    changes = {k: v for k, v in overrides.items() if v is not None}
    if "warmup" in changes:
        changes["paper_warmup_from_depth"] = None
    share = cfg.train.warmup_epochs / cfg.train.epochs
    if changes.get("warmup") == "linear" and share == 0:
        default = PRESETS[DEFAULT_PRESET].train
        share = default.warmup_epochs / default.epochs
    if "epochs" in changes or share != cfg.train.warmup_epochs / cfg.train.epochs:
        changes["warmup_epochs"] = share * changes.get("epochs", cfg.train.epochs)
    return cfg.replace(**changes)


@dataclass(frozen=True)
class Preset:
    """A named sweep and the sentence ``--help`` says about it (the numbers come from ``config``)."""

    config: DegradationConfig
    about: str  # what it is for, in a few words
    notes: str = ""  # what the numbers do not say


PRESET_INFO: dict[str, Preset] = {
    # Measured with this preset: see docs/degradation.md ("Measured"). Without the warm-up
    # resnet-56 fails too.
    "digits": Preset(
        DegradationConfig(),
        "the default: scikit-learn's embedded 8x8 digits (no download)",
        "about 140 CPU-seconds: 3 minutes or less on 2 idle CPU cores",
    ),
    "fashion-mnist": Preset(
        DegradationConfig(
            dataset="fashion-mnist",
            depths=(20, 32, 44, 56),
            seeds=1,
            train=TrainConfig(epochs=15, lr=0.05, warmup="linear", warmup_epochs=2.0),
        ),
        "Fashion-MNIST (downloads ~30 MB)",
        "60k 28x28 images; meant for a GPU",
    ),
    # He et al. 2015, Sec. 4.2: lr 0.1, batch 128, wd 1e-4, momentum 0.9, /10 at 32k
    # and 48k of 64k iterations (~182 epochs on a 45k/5k split), pad-4 crop + flip,
    # option-A shortcuts, and for ResNet-110 lr 0.01 until training error < 80%.
    "paper": Preset(
        DegradationConfig(
            dataset="cifar10",
            depths=(20, 32, 44, 56, 110),
            seeds=1,
            train=TrainConfig(
                epochs=182,
                batch_size=128,
                lr=0.1,
                momentum=0.9,
                weight_decay=1e-4,
                schedule="step",
                warmup="none",
                warmup_epochs=0.0,
                augment=True,
            ),
            paper_warmup_from_depth=110,
            val_size=5000,
        ),
        "CIFAR-10 with He et al.'s recipe (Sec. 4.2)",
        "option-A shortcuts; a GPU job",
    ),
}
PRESETS: dict[str, DegradationConfig] = {name: p.config for name, p in PRESET_INFO.items()}
DEFAULT_PRESET = "digits"


def describe_preset(name: str) -> str:
    """What preset ``name`` runs, its numbers read from its config (``--help`` shows this)."""
    info = PRESET_INFO[name]
    cfg, t = info.config, info.config.train
    warmup = {
        "linear": f"{t.warmup_epochs:g}-epoch linear warm-up",
        "none": "no warm-up",
        "paper": "paper warm-up",
    }[t.warmup]
    if cfg.paper_warmup_from_depth is not None:
        warmup += f" (paper warm-up from depth {cfg.paper_warmup_from_depth})"
    schedule = "step schedule (/10 at 50% and 75%)" if t.schedule == "step" else "cosine schedule"
    wd = f"{t.weight_decay:.0e}".replace("e-0", "e-")
    parts = [
        f"{info.about}.",
        f"Depths {', '.join(map(str, cfg.depths))}; {cfg.seeds} seed{'s' * (cfg.seeds > 1)};",
        f"{t.epochs} epochs, batch {t.batch_size}, lr {t.lr:g}, wd {wd}, {schedule}, {warmup}",
    ]
    if t.augment:
        parts[-1] += ", crop-flip"
    if cfg.val_size:
        parts[-1] += f", {cfg.val_size} training images held out"
    parts[-1] += "."
    if info.notes:
        parts.append(info.notes[0].upper() + info.notes[1:] + ".")
    return " ".join(parts)


def verdict_rule() -> str:
    """The verdict's rule in words, with the constants it uses."""
    return (
        f"Degradation is reproduced when the deepest plain net's final training error (mean "
        f"over seeds) exceeds the shallowest plain net's by more than "
        f"{DEGRADATION_MARGIN:g} point and by more than {SIGNIFICANCE:g} standard errors of "
        f"that gap over seeds, AND the deepest residual net's exceeds the shallowest residual "
        f"net's by at most {RESIDUAL_TOLERANCE:g} point. Diverged runs are left out and named."
    )


# --------------------------------------------------------------------------- runs
@dataclass(frozen=True, order=True)
class RunSpec:
    """One training run of the sweep."""

    variant: str  # "plain" | "residual"
    depth: int
    seed: int

    @property
    def skip(self) -> bool:
        return VARIANTS[self.variant]

    @property
    def model(self) -> str:
        """The name :func:`residuals.nets.model_name` gives the net: "plain56", "resnet56"."""
        return _prefix(self.variant) + str(self.depth)

    @property
    def registry_name(self) -> str:
        """The net's name for :func:`residuals.nets.build_model`: "-basic" picks the paper's
        CIFAR net (basic blocks, option-A shortcuts) at every depth, also where the bare name
        is an ImageNet-style net ("resnet50")."""
        return f"{self.model}-basic"

    @property
    def label(self) -> str:
        return model_label(self.variant, self.depth)

    @property
    def key(self) -> str:
        return f"{self.model}-seed{self.seed}"


def _prefix(variant: str) -> str:
    return "resnet" if VARIANTS[variant] else "plain"


def model_label(variant: str, depth: int) -> str:
    """``plain-56`` / ``resnet-56``: how the report and the verdict name a net."""
    return f"{_prefix(variant)}-{int(depth)}"


def plan_runs(cfg: DegradationConfig) -> list[RunSpec]:
    """Every run of the sweep, the most expensive first (deepest, then by seed).

    Longest-first keeps parallel workers busy until the end instead of leaving one
    deep net running alone.
    """
    seeds = range(cfg.first_seed, cfg.first_seed + cfg.seeds)
    specs = [RunSpec(v, d, s) for d in cfg.depths for v in cfg.variants for s in seeds]
    return sorted(specs, key=lambda r: (-r.depth, r.seed, r.variant))
