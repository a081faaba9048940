"""What the boosting bench fits: its datasets, losses and methods, :class:`BoostingBenchConfig`,
and the cases (dataset, size, loss) a config expands to."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

__all__ = [
    "BoostingBenchConfig",
    "Case",
    "DATASETS",
    "HIST_LOSSES",
    "LOSSES",
    "METHODS",
    "EXPECTED_TO_MATCH",
    "NOT_EXPECTED_NOTE",
    "PARITY_PAIRS",
    "PRESETS",
    "Split",
    "describe_preset",
    "iter_cases",
    "load_split",
]


# ---------------------------------------------------------------------------- datasets


@dataclass
class Split:
    """A train/test split of one dataset. Shapes: ``X (n, d)``, ``y (n,)``."""

    name: str  # e.g. "diabetes", "friedman1"
    task: str  # "regression" | "binary" | "multiclass"
    X_train: np.ndarray
    X_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray

    @property
    def n_train(self) -> int:
        return int(self.X_train.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X_train.shape[1])

    @property
    def n_classes(self) -> int:
        return 0 if self.task == "regression" else int(np.unique(self.y_train).size)


@dataclass(frozen=True)
class TabularSpec:
    name: str
    task: str
    sized: bool  # True: synthetic, generated at each of the config's sizes
    description: str


# Only datasets that load without a network: shipped with scikit-learn, or generated.
DATASETS: dict[str, TabularSpec] = {
    "diabetes": TabularSpec(
        "diabetes", "regression", False, "442 x 10, disease progression (sklearn)"
    ),
    "breast_cancer": TabularSpec(
        "breast_cancer", "binary", False, "569 x 30, malignant vs benign (sklearn)"
    ),
    "wine": TabularSpec("wine", "multiclass", False, "178 x 13, 3 cultivars (sklearn)"),
    "digits": TabularSpec(
        "digits", "multiclass", False, "1797 x 64, 8x8 digit images, 10 classes (sklearn)"
    ),
    "friedman1": TabularSpec(
        "friedman1", "regression", True, "n x 10, Friedman (1991) #1, noise 1.0"
    ),
    "classification": TabularSpec(
        "classification", "binary", True, "n x 20, make_classification, 10 informative features"
    ),
}

# Losses by task, in the names scikit-learn uses. HistGradientBoosting has no
# huber or exponential loss: those cases compare exact mode with GBRT only.
LOSSES: dict[str, tuple[str, ...]] = {
    "regression": ("squared_error", "absolute_error", "huber", "quantile"),
    "binary": ("log_loss", "exponential"),
    "multiclass": ("log_loss",),
}
QUICK_LOSSES: dict[str, tuple[str, ...]] = {
    "regression": ("squared_error", "absolute_error"),
    "binary": ("log_loss",),
    "multiclass": ("log_loss",),
}
HIST_LOSSES = frozenset({"squared_error", "absolute_error", "quantile", "log_loss"})
ALPHA = 0.9  # huber and quantile alpha, scikit-learn's default for both

METHODS: tuple[str, ...] = ("ours-exact", "ours-hist", "sklearn-gbrt", "sklearn-hist")
# (ours, reference): exact mode must equal GBRT exactly; hist is compared with HGB
PARITY_PAIRS: tuple[tuple[str, str], ...] = (
    ("ours-exact", "sklearn-gbrt"),
    ("ours-hist", "sklearn-hist"),
)
# which pairs are meant to agree bit for bit: exact mode is scikit-learn's algorithm; hist
# mode bins the features its own way, so its predictions are expected to differ
EXPECTED_TO_MATCH: dict[str, bool] = {"ours-exact": True, "ours-hist": False}
NOT_EXPECTED_NOTE = "not expected to match: the two bin features their own way"


def load_split(
    name: str, n_train: int | None = None, *, seed: int = 0, test_size: float = 0.25
) -> Split:
    """Load (or generate) a dataset and split it.

    Shipped datasets are split ``1 - test_size : test_size`` (stratified for
    classification). Synthetic ones are generated with exactly ``n_train``
    training rows and ``n_train * test_size / (1 - test_size)`` test rows.
    """
    from sklearn import datasets as skd
    from sklearn.model_selection import train_test_split

    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    spec = DATASETS[name]
    if spec.sized:
        if n_train is None or n_train < 20:
            raise ValueError(f"dataset {name!r} is generated: give n_train >= 20, got {n_train}")
        n_test = max(10, int(round(n_train * test_size / (1 - test_size))))
        n = n_train + n_test
        if name == "friedman1":
            X, y = skd.make_friedman1(n_samples=n, n_features=10, noise=1.0, random_state=seed)
        else:
            X, y = skd.make_classification(
                n_samples=n, n_features=20, n_informative=10, n_redundant=5, random_state=seed
            )
        return Split(name, spec.task, X[:n_train], X[n_train:], y[:n_train], y[n_train:])
    loader = {
        "diabetes": skd.load_diabetes,
        "breast_cancer": skd.load_breast_cancer,
        "wine": skd.load_wine,
        "digits": skd.load_digits,
    }[name]
    X, y = loader(return_X_y=True)
    X = np.asarray(X, dtype=np.float64)
    strat = None if spec.task == "regression" else y
    X_tr, X_te, y_tr, y_te = train_test_split(
        X, y, test_size=test_size, random_state=seed, stratify=strat
    )
    return Split(name, spec.task, X_tr, X_te, y_tr, y_te)


# ---------------------------------------------------------------------------- config


@dataclass(frozen=True)
class BoostingBenchConfig:
    """What one run of the bench fits. Saved in the run's meta.json."""

    datasets: tuple[str, ...] = tuple(DATASETS)
    sizes: tuple[int, ...] = (1000, 4000, 16000)  # training rows of the generated datasets
    losses: tuple[str, ...] = ()  # empty: the defaults of each task (quick or full)
    full_losses: bool = False  # with losses=(): every loss of LOSSES, else QUICK_LOSSES
    methods: tuple[str, ...] = METHODS
    n_estimators: int = 100  # boosting stages M
    max_depth: int = 3  # tree depth (edges root to deepest leaf)
    learning_rate: float = 0.1  # shrinkage lr in F_m = F_{m-1} + lr * h_m
    max_bins: int = 255  # hist mode: bins per feature (<= 255 for scikit-learn)
    test_size: float = 0.25  # fraction of rows held out
    device: str = "cpu"  # hist mode: "cpu", "cuda[:i]" or "auto" (run() resolves it)
    threads: int = 1  # BLAS/OpenMP/torch threads for every learner
    seed: int = 0  # data split and every learner's random_state

    def __post_init__(self) -> None:
        for name in ("datasets", "sizes", "losses", "methods"):  # lists from JSON
            object.__setattr__(self, name, tuple(getattr(self, name)))

    @classmethod
    def quick(cls, **overrides: Any) -> BoostingBenchConfig:
        """The ``quick`` preset with ``overrides``."""
        return replace(PRESETS["quick"], **overrides)

    @classmethod
    def full(cls, **overrides: Any) -> BoostingBenchConfig:
        """The ``full`` preset with ``overrides``."""
        return replace(PRESETS["full"], **overrides)

    def replace(self, **changes: Any) -> BoostingBenchConfig:
        return replace(self, **changes)

    @classmethod
    def from_dict(cls, d: dict) -> BoostingBenchConfig:
        """Inverse of :meth:`as_dict` (meta.json's ``config``); unknown keys are an error."""
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"not a boosting bench config: unknown keys {unknown}")
        return cls(**d)

    def validate(self) -> BoostingBenchConfig:
        """Raise ``ValueError`` with a readable message for any bad setting."""

        def bad(msg: str):
            raise ValueError(msg)

        if not self.datasets:
            bad("no datasets chosen")
        for d in self.datasets:
            if d not in DATASETS:
                bad(f"unknown dataset {d!r}; choose from: {', '.join(DATASETS)}")
        all_losses = sorted({l for ls in LOSSES.values() for l in ls})
        for loss in self.losses:
            if loss not in all_losses:
                bad(f"unknown loss {loss!r}; choose from: {', '.join(all_losses)}")
        if not self.methods:
            bad("no methods chosen")
        for m in self.methods:
            if m not in METHODS:
                bad(f"unknown method {m!r}; choose from: {', '.join(METHODS)}")
        if any(DATASETS[d].sized for d in self.datasets) and not self.sizes:
            bad("generated datasets (friedman1, classification) need at least one size")
        for s in self.sizes:
            if s < 20:
                bad(f"sizes are training rows and must be >= 20, got {s}")
        if self.n_estimators < 1:
            bad(f"n_estimators must be >= 1, got {self.n_estimators}")
        if self.max_depth < 1:
            bad(f"max_depth must be >= 1, got {self.max_depth}")
        if not 0 < self.learning_rate <= 10:
            bad(f"learning_rate must be in (0, 10], got {self.learning_rate}")
        if not 2 <= self.max_bins <= 255:
            bad(f"max_bins must be in [2, 255] (scikit-learn's limit), got {self.max_bins}")
        if not 0 < self.test_size < 1:
            bad(f"test_size must be in (0, 1), got {self.test_size}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            bad(f"device must be 'auto', 'cpu' or 'cuda[:i]', got {self.device!r}")
        if self.threads < 1:
            bad(f"threads must be >= 1, got {self.threads}")
        return self

    def as_dict(self) -> dict:
        return asdict(self)


# The presets; --help describes them from these (describe_preset).
PRESETS: dict[str, BoostingBenchConfig] = {
    "quick": BoostingBenchConfig(),
    "full": BoostingBenchConfig(sizes=(1000, 10_000, 100_000), full_losses=True),
}


def describe_preset(name: str) -> str:
    """What preset ``name`` fits, read from its config (``--help`` shows this)."""
    cfg = PRESETS[name]
    losses = (
        "every loss"
        if cfg.full_losses
        else "the main loss of each task ("
        + ", ".join(sorted({loss for ls in QUICK_LOSSES.values() for loss in ls}))
        + ")"
    )
    sizes = ", ".join(f"{n:,}" for n in cfg.sizes)
    return (
        f"{', '.join(cfg.datasets)}; generated data at {sizes} training rows; {losses}; "
        f"{cfg.n_estimators} trees of depth {cfg.max_depth}, lr {cfg.learning_rate:g}, "
        f"{cfg.max_bins} bins; {', '.join(cfg.methods)}."
    )


@dataclass(frozen=True)
class Case:
    """One (dataset, size, loss) combination; every method is fitted on it."""

    dataset: str
    size: int | None  # training rows for generated datasets, None for shipped ones
    task: str
    loss: str

    @property
    def label(self) -> str:
        name = self.dataset if self.size is None else f"{self.dataset} n={self.size:,}"
        return f"{name} / {self.loss}"


def iter_cases(cfg: BoostingBenchConfig) -> Iterator[Case]:
    """Every case of a config, in run order (small datasets first, sizes ascending)."""
    for name in cfg.datasets:
        spec = DATASETS[name]
        if cfg.losses:
            losses = tuple(l for l in cfg.losses if l in LOSSES[spec.task])
        else:
            losses = (LOSSES if cfg.full_losses else QUICK_LOSSES)[spec.task]
        sizes = sorted(set(cfg.sizes)) if spec.sized else [None]
        for size in sizes:
            for loss in losses:
                yield Case(name, size, spec.task, loss)
