"""What one ``bench ensemble`` run is: its configuration, presets and the verdict's constants."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from residuals.bench.ensemble.families import FAMILIES

__all__ = [
    "CONTRAST_FACTOR",
    "DEFAULT_FAMILIES",
    "DEFAULT_PRESET",
    "KEYS",
    "PLAIN_MIN_POINTS",
    "PRESETS",
    "PRESET_INFO",
    "TABLES",
    "EnsembleConfig",
    "Preset",
    "describe_preset",
    "verdict_rule",
]

DEFAULT_FAMILIES = ("booster", "residual", "plain", "stagewise")
CONTRAST_FACTOR = 0.25  # residual D at most this fraction of the plain D ...
PLAIN_MIN_POINTS = 10.0  # ... and the plain D at least this many points
TABLES = ("lesions", "staged", "contributions", "models")  # models.csv last: the commit
KEYS = ["family", "seed"]


@dataclass(frozen=True)
class EnsembleConfig:
    """One run: which families, on what data, trained how, measured how."""

    dataset: str = "digits"
    families: tuple[str, ...] = DEFAULT_FAMILIES
    seeds: int = 2  # every family trains with seeds 0 .. seeds-1
    train_size: int | None = None  # train on this many images (seeded subset); None: all
    test_size: int | None = None  # measure on this many test images (seeded subset); None: all
    # the measurements
    draws: int = 10  # random sets of k deleted stages, per k
    points: int = 21  # at most this many k (and staged) values per model
    eval_batch_size: int = 1024  # test images per lesion batch
    probe_images: int = 1000  # test images the stage contributions are measured on
    # the nets: residual and plain, end to end (as the degradation bench's digits preset)
    depth: int = 20  # 6n+2: CIFAR ResNet (He et al. 2015), n blocks per stage
    epochs: int = 12
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # "cosine" | "step"
    warmup: str = "linear"  # "linear" | "paper" | "none"
    warmup_epochs: float = 2.0
    augment: bool | None = None  # None: the dataset's default
    amp: bool | None = None  # bf16 autocast; None: residuals.train.resolve_amp
    # the stagewise net: each block trains alone for stage_epochs (residuals.train.stagewise)
    stage_epochs: int = 6
    stage_batch_size: int = 64
    stage_lr: float = 0.1
    # the booster: hist mode, multi-class log loss
    n_estimators: int = 100
    learning_rate: float = 0.1
    max_depth: int = 3
    max_bins: int = 255
    subsample: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "families", tuple(self.families))
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown or not self.families:
            raise ValueError(
                f"families: unknown {unknown or 'none given'}; choose from {', '.join(FAMILIES)}"
            )
        if len(set(self.families)) != len(self.families):
            raise ValueError(f"families: each family once, got {list(self.families)}")
        for name, low in (
            ("seeds", 1),
            ("draws", 1),
            ("points", 2),
            ("eval_batch_size", 1),
            ("probe_images", 1),
            ("stage_epochs", 1),
            ("stage_batch_size", 2),
            ("n_estimators", 1),
            ("max_depth", 1),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        for name in ("train_size", "test_size"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 2
            ):
                raise ValueError(f"{name} must be an integer >= 2 (or None: all), got {value!r}")
        if self.depth < 8 or (self.depth - 2) % 6:
            raise ValueError(
                f"depth must be 6n+2 (8, 14, 20, 32, 44, 56, 110, ...), got {self.depth}"
            )
        if not 0 < self.learning_rate or not 0 < self.subsample <= 1:
            raise ValueError("learning_rate must be > 0 and subsample in (0, 1]")

        for what, recipe in (
            ("the nets'", self.net_train_config),
            ("the stagewise net's", self.stage_train_config),
        ):
            try:
                recipe(0, "cpu")
            except ValueError as e:
                raise ValueError(f"{what} training recipe: {e}") from None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> EnsembleConfig:
        """Inverse of :meth:`to_dict` (meta.json's ``config``); unknown keys are an error."""
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"not an ensemble config: unknown keys {unknown}")
        return cls(**d)

    def net_train_config(self, seed: int, device: str):
        """The trainer's recipe for the end-to-end nets."""
        from residuals.train import TrainConfig

        return TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            schedule=self.schedule,
            warmup=self.warmup,
            warmup_epochs=self.warmup_epochs,
            augment=self.augment,
            eval_batch_size=self.eval_batch_size,
            amp=self.amp,
            seed=seed,
            device=device,
        )

    def stage_train_config(self, seed: int, device: str):
        """The trainer's recipe for one stage of the stagewise net (no warm-up: a new block
        starts as the identity, so the first steps cannot blow the model so far up)."""
        return replace(
            self.net_train_config(seed, device),
            epochs=self.stage_epochs,
            batch_size=self.stage_batch_size,
            lr=self.stage_lr,
            schedule="cosine",
            warmup="none",
            warmup_epochs=0.0,
        )


@dataclass(frozen=True)
class Preset:
    config: EnsembleConfig
    about: str  # the data, in words
    where: str  # what it is meant for


PRESET_INFO: dict[str, Preset] = {
    # Measured with this preset: see docs/ensemble.md ("Measured results").
    "digits": Preset(
        EnsembleConfig(),
        "the default: scikit-learn's embedded 8x8 digits (no download)",
        "3 minutes or less on 2 CPU cores",
    ),
    # ResNet-56 and its twin; a booster of comparable size in learned numbers (500
    # iterations x 10 trees of depth 6: 635k leaf values and thresholds; ResNet-56 has
    # 0.85M weights).
    "fashion-mnist": Preset(
        EnsembleConfig(
            dataset="fashion-mnist",
            depth=56,
            seeds=1,
            epochs=15,
            lr=0.05,
            warmup_epochs=2.0,
            stage_epochs=2,
            stage_batch_size=128,
            stage_lr=0.1,
            n_estimators=500,
            max_depth=6,
            learning_rate=0.1,
            eval_batch_size=1000,
        ),
        "Fashion-MNIST (downloads ~30 MB)",
        "a booster of comparable size in learned numbers (ResNet-56: 0.85M weights); a GPU",
    ),
    # Veit et al.'s setting: CIFAR-10 ResNet-110 with He et al.'s recipe (lr 0.1, /10 at 50%
    # and 75% of 182 epochs, lr/10 until training error < 80%, pad-crop-flip).
    "paper": Preset(
        EnsembleConfig(
            dataset="cifar10",
            depth=110,
            seeds=1,
            epochs=182,
            batch_size=128,
            lr=0.1,
            schedule="step",
            warmup="paper",
            warmup_epochs=0.0,
            augment=True,
            stage_epochs=4,
            stage_batch_size=128,
            stage_lr=0.1,
            n_estimators=1000,
            max_depth=6,
            learning_rate=0.1,
            eval_batch_size=1000,
        ),
        "Veit et al.'s setting: CIFAR-10 (downloads ~170 MB) with He et al.'s recipe",
        "a GPU job",
    ),
}
PRESETS: dict[str, EnsembleConfig] = {name: p.config for name, p in PRESET_INFO.items()}
DEFAULT_PRESET = "digits"


def describe_preset(name: str) -> str:
    """What preset ``name`` runs, its numbers read from its config (``--help`` shows this)."""
    info = PRESET_INFO[name]
    c = info.config
    schedule = "/10 at 50% and 75%" if c.schedule == "step" else "cosine"
    warmup = {
        "linear": f"{c.warmup_epochs:g}-epoch linear warm-up",
        "none": "no warm-up",
        "paper": "lr/10 until training error < 80%",
    }[c.warmup]
    return (
        f"{info.about}. ResNet-{c.depth} and its plain twin ({c.epochs} epochs, batch "
        f"{c.batch_size}, lr {c.lr:g}, {schedule}, {warmup}"
        f"{', crop-flip' if c.augment else ''}); the stagewise ResNet-{c.depth} "
        f"({c.stage_epochs} epochs per block, lr {c.stage_lr:g}); a booster of "
        f"{c.n_estimators} iterations of depth-{c.max_depth} trees (lr {c.learning_rate:g}); "
        f"{c.seeds} seed{'s' * (c.seeds > 1)}; {c.draws} draws per k. {info.where[0].upper()}"
        f"{info.where[1:]}."
    )


def verdict_rule() -> str:
    """The verdict's rule in words, with the constants it uses (``--help`` and the report)."""
    return (
        "For each model, D is the mean over its stages of the test error with that stage "
        "deleted minus the whole model's, in points. Veit's contrast is reproduced when, on "
        f"every seed, D(residual) <= {CONTRAST_FACTOR:g} x D(plain) and D(plain) >= "
        f"{PLAIN_MIN_POINTS:g} points: deleting a block of the residual net costs at most a "
        "quarter of what deleting a block of the plain net costs, and deleting a plain block "
        "does break the plain net."
    )
