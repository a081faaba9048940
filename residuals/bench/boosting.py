"""``residuals bench boosting``: our booster against scikit-learn's, measured.

For every dataset and loss the bench fits four learners on the same split, with
the same trees (depth, shrinkage, number of stages, one sample per leaf at
least, no regularisation):

* ``ours-exact``   -- :class:`residuals.boosting.BoostingRegressor` /
  ``BoostingClassifier`` with ``tree_method="exact"``;
* ``ours-hist``    -- the same with ``tree_method="hist"`` (``device`` applies);
* ``sklearn-gbrt`` -- :class:`sklearn.ensemble.GradientBoostingRegressor` /
  ``Classifier`` (Friedman 2001, the reference for exact mode);
* ``sklearn-hist`` -- :class:`sklearn.ensemble.HistGradientBoostingRegressor` /
  ``Classifier`` (LightGBM-style histograms, the reference for hist mode).

Everything reported is measured here and saved as tidy tables in the run folder
(the report is a pure function of them, see :mod:`residuals.bench.boosting_report`):

``results.csv``
    one row per (case, method): fit time, final train/test loss, status;
``staged.csv``
    one row per (case, method, split, stage): the loss and the RMS residual
    ``y - prediction`` after ``m`` stages (Friedman 2001, eq. 10: the running
    model ``F_m = F_{m-1} + lr * h_m``);
``parity.csv``
    one row per (case, pair): ``max |F_m(x) ours - F_m(x) reference|`` over every
    stage ``m`` and every train and test sample -- raw predictions
    (``staged_predict`` for regressors, ``staged_decision_function`` for
    classifiers, so differences are not squashed by a sigmoid);
``contributions.csv``
    our boosters' per-stage correction sizes ``||lr * h_m(X)||`` and
    ``||F_{m-1}(X)||`` on the training set (:func:`residuals.core.contribution_table`);
``hist_gap.csv``
    one row per case: our hist mode's final test loss against exact mode's,
    the gap (absolute and relative) and its paired standard error over the
    test rows (:func:`paired_gap`), the yardstick for "hist is within x% of exact".
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd

__all__ = [
    "BoostingBenchConfig", "Case", "Split", "DATASETS", "METHODS", "PARITY_PAIRS",
    "LOSSES", "HIST_LOSSES", "load_dataset", "iter_cases", "make_estimator",
    "stage_metrics", "pointwise_metric", "paired_gap", "run_benchmark", "BenchTables",
]

# ---------------------------------------------------------------------------- datasets


@dataclass
class Split:
    """A train/test split of one dataset. Shapes: ``X (n, d)``, ``y (n,)``."""

    name: str            # e.g. "diabetes", "friedman1"
    task: str            # "regression" | "binary" | "multiclass"
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
class DatasetSpec:
    name: str
    task: str
    sized: bool          # True: synthetic, generated at each of the config's sizes
    description: str


# Only datasets that load without a network: shipped with scikit-learn, or generated.
DATASETS: dict[str, DatasetSpec] = {
    "diabetes": DatasetSpec("diabetes", "regression", False, "442 x 10, disease progression (sklearn)"),
    "breast_cancer": DatasetSpec("breast_cancer", "binary", False, "569 x 30, malignant vs benign (sklearn)"),
    "wine": DatasetSpec("wine", "multiclass", False, "178 x 13, 3 cultivars (sklearn)"),
    "digits": DatasetSpec("digits", "multiclass", False, "1797 x 64, 8x8 digit images, 10 classes (sklearn)"),
    "friedman1": DatasetSpec("friedman1", "regression", True, "n x 10, Friedman (1991) #1, noise 1.0"),
    "classification": DatasetSpec("classification", "binary", True,
                                  "n x 20, make_classification, 10 informative features"),
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
PARITY_PAIRS: tuple[tuple[str, str], ...] = (("ours-exact", "sklearn-gbrt"), ("ours-hist", "sklearn-hist"))


def load_dataset(name: str, n_train: int | None = None, *, seed: int = 0,
                 test_size: float = 0.25) -> Split:
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
            X, y = skd.make_classification(n_samples=n, n_features=20, n_informative=10,
                                           n_redundant=5, random_state=seed)
        return Split(name, spec.task, X[:n_train], X[n_train:], y[:n_train], y[n_train:])
    loader = {"diabetes": skd.load_diabetes, "breast_cancer": skd.load_breast_cancer,
              "wine": skd.load_wine, "digits": skd.load_digits}[name]
    X, y = loader(return_X_y=True)
    X = np.asarray(X, dtype=np.float64)
    strat = None if spec.task == "regression" else y
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=test_size, random_state=seed, stratify=strat)
    return Split(name, spec.task, X_tr, X_te, y_tr, y_te)


# ---------------------------------------------------------------------------- config


@dataclass(frozen=True)
class BoostingBenchConfig:
    """What one run of the bench fits. Saved in the run's meta.json."""

    datasets: tuple[str, ...] = tuple(DATASETS)
    sizes: tuple[int, ...] = (1000, 4000, 16000)  # training rows of the generated datasets
    losses: tuple[str, ...] = ()         # empty: the defaults of each task (quick or full)
    full_losses: bool = False            # with losses=(): every loss of LOSSES, else QUICK_LOSSES
    methods: tuple[str, ...] = METHODS
    n_estimators: int = 100              # boosting stages M
    max_depth: int = 3                   # tree depth (edges root to deepest leaf)
    learning_rate: float = 0.1           # shrinkage lr in F_m = F_{m-1} + lr * h_m
    max_bins: int = 255                  # hist mode: bins per feature (<= 255 for scikit-learn)
    test_size: float = 0.25              # fraction of rows held out
    device: str = "cpu"                  # hist mode: "cpu" or "cuda" ("auto" is resolved by the CLI)
    threads: int = 1                     # BLAS/OpenMP/torch threads for every learner
    seed: int = 0                        # data split and every learner's random_state

    @classmethod
    def quick(cls, **overrides: Any) -> "BoostingBenchConfig":
        """About two minutes on a 2-core laptop CPU."""
        return replace(cls(), **overrides)

    @classmethod
    def full(cls, **overrides: Any) -> "BoostingBenchConfig":
        """Every loss, generated data up to 100k rows (GBRT alone takes minutes there)."""
        return replace(cls(sizes=(1000, 10_000, 100_000), full_losses=True), **overrides)

    def validate(self) -> "BoostingBenchConfig":
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
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            bad(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.threads < 1:
            bad(f"threads must be >= 1, got {self.threads}")
        return self

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Case:
    """One (dataset, size, loss) combination; every method is fitted on it."""

    dataset: str
    size: int | None     # training rows for generated datasets, None for shipped ones
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


# ---------------------------------------------------------------------------- learners


def method_unsupported(method: str, case: Case) -> str | None:
    """Why ``method`` cannot run ``case``, or None when it can."""
    if method == "sklearn-hist" and case.loss not in HIST_LOSSES:
        return f"HistGradientBoosting has no {case.loss!r} loss"
    return None


def make_estimator(method: str, case: Case, cfg: BoostingBenchConfig):
    """An unfitted learner with the bench's shared tree settings."""
    clf = case.task != "regression"
    common = dict(learning_rate=cfg.learning_rate, max_depth=cfg.max_depth, random_state=cfg.seed,
                  loss=case.loss)
    if case.loss in ("huber", "quantile"):
        common["alpha"] = ALPHA
    if method in ("ours-exact", "ours-hist"):
        from residuals.boosting import BoostingClassifier, BoostingRegressor

        kind = dict(tree_method="exact") if method == "ours-exact" else dict(
            tree_method="hist", max_bins=cfg.max_bins, device=cfg.device)
        cls = BoostingClassifier if clf else BoostingRegressor
        return cls(n_estimators=cfg.n_estimators, **common, **kind)
    if method == "sklearn-gbrt":
        from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor

        cls = GradientBoostingClassifier if clf else GradientBoostingRegressor
        return cls(n_estimators=cfg.n_estimators, **common)
    if method == "sklearn-hist":
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

        if case.loss == "quantile":
            common["quantile"] = common.pop("alpha")
        cls = HistGradientBoostingClassifier if clf else HistGradientBoostingRegressor
        # the same trees as GBRT: depth-limited, no leaf cap, 1 sample per leaf, no L2,
        # and all M stages (no early stopping)
        return cls(max_iter=cfg.n_estimators, max_leaf_nodes=None, min_samples_leaf=1,
                   l2_regularization=0.0, max_bins=cfg.max_bins, early_stopping=False, **common)
    raise ValueError(f"unknown method {method!r}; choose from: {', '.join(METHODS)}")


# A fit faster than FAST_FIT_S seconds is timed FAST_FIT_REPEATS times and its median
# kept: one sub-second fit on a shared machine varies by +-20% from run to run
# (measured: hist at 16k rows, 0.098 s in one run, 0.120 s in the next); slow fits
# (exact mode, GBRT) are timed once, their noise is relatively small.
FAST_FIT_S = 1.0
FAST_FIT_REPEATS = 3


def timed_fit(est, X: np.ndarray, y: np.ndarray, device: str) -> float:
    """Fit ``est`` and return the wall time in seconds (GPU work synchronized)."""
    cuda = device.startswith("cuda")
    if cuda:
        import torch
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    est.fit(X, y)
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def staged_raw(est, X: np.ndarray, task: str) -> Iterator[np.ndarray]:
    """Raw predictions ``F_m(X)`` after each stage: shape ``(n,)``, or ``(n, K)`` for multiclass."""
    gen = est.staged_predict(X) if task == "regression" else est.staged_decision_function(X)
    for raw in gen:
        raw = np.asarray(raw, dtype=np.float64)
        yield raw.ravel() if raw.ndim == 2 and raw.shape[1] == 1 else raw


# ---------------------------------------------------------------------------- scoring

METRIC_NAMES = {
    "squared_error": "MSE", "absolute_error": "MAE",
    "huber": "MSE",  # huber's delta moves with every stage; scored by MSE
    "quantile": f"pinball loss (alpha={ALPHA})", "log_loss": "log loss",
    "exponential": "exponential loss",
}


def _softmax(raw: np.ndarray) -> np.ndarray:
    z = raw - raw.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _expit(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # stable for large |z|


def _pointwise(y: np.ndarray, raw: np.ndarray, loss: str, task: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-row loss (named by :data:`METRIC_NAMES`) and squared residual, both (n,)."""
    if task == "regression":
        r = y - raw
        if loss in ("squared_error", "huber"):
            value = r * r
        elif loss == "absolute_error":
            value = np.abs(r)
        elif loss == "quantile":
            value = np.maximum(ALPHA * r, (ALPHA - 1) * r)
        else:
            raise ValueError(f"no regression metric for loss {loss!r}")
        return value, r * r
    eps = 1e-15
    if task == "binary":
        yy = y.astype(np.float64)
        if loss == "exponential":
            return np.exp(-(2 * yy - 1) * raw), (yy - _expit(2 * raw)) ** 2
        p = _expit(raw)
        pc = np.clip(p, eps, 1 - eps)
        return -(yy * np.log(pc) + (1 - yy) * np.log(1 - pc)), (yy - p) ** 2
    P = _softmax(raw)
    onehot = np.zeros_like(P)
    onehot[np.arange(len(y)), y.astype(int)] = 1.0
    value = -np.log(np.clip(P[np.arange(len(y)), y.astype(int)], eps, None))
    return value, np.sum((onehot - P) ** 2, axis=1)


def pointwise_metric(y: np.ndarray, raw: np.ndarray, loss: str, task: str) -> np.ndarray:
    """The loss of every row, shape (n,): :func:`stage_metrics`' loss is its mean."""
    return _pointwise(y, raw, loss, task)[0]


def stage_metrics(y: np.ndarray, raw: np.ndarray, loss: str, task: str) -> tuple[float, float]:
    """The loss of ``raw`` and the RMS residual ``y - prediction``.

    Parameters
    ----------
    y : ndarray of shape (n,)
        Targets; class indices ``0..K-1`` for classification.
    raw : ndarray of shape (n,) or (n, K)
        Raw model output ``F_m(x)`` (log-odds / logits for classifiers).

    Returns
    -------
    (loss, residual_rms) : the loss named by :data:`METRIC_NAMES`, and
    ``sqrt(mean((y - p)^2))`` with ``p`` the prediction (regression) or the
    predicted probabilities against one-hot ``y`` (classification).
    """
    value, squared = _pointwise(y, raw, loss, task)
    return float(np.mean(value)), float(np.sqrt(np.mean(squared)))


def paired_gap(ours: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """``(gap, standard_error)`` of two models' per-row losses on the same rows.

    ``gap = mean(ours - reference)``, the difference of the test losses; its
    standard error ``std(ours - reference) / sqrt(n)`` (paired, ddof=1) is how
    much the gap would move with another test set of the same size: a gap
    within about 2 standard errors is one the test set cannot tell from 0.
    """
    d = np.asarray(ours, dtype=np.float64) - np.asarray(reference, dtype=np.float64)
    se = float(np.std(d, ddof=1) / np.sqrt(d.size)) if d.size > 1 else float("nan")
    return float(np.mean(d)), se


def max_abs_diff(a: Iterator[np.ndarray], b: Iterator[np.ndarray]) -> tuple[float, int, int | None]:
    """``max_m max_i |a_m(i) - b_m(i)|`` over two staged outputs.

    Returns ``(max_diff, n_stages, first_stage_that_differs)`` (stages 1-based;
    ``None`` when all agree). ``max_diff`` is ``nan`` if the stage counts differ.
    """
    worst, first, n = 0.0, None, 0
    sentinel = object()
    while True:
        ra, rb = next(a, sentinel), next(b, sentinel)
        if ra is sentinel and rb is sentinel:
            return worst, n, first
        if ra is sentinel or rb is sentinel:
            return float("nan"), n, first
        n += 1
        if ra.shape != rb.shape:
            return float("nan"), n, n
        d = float(np.max(np.abs(ra - rb))) if ra.size else 0.0
        if d > 0 and first is None:
            first = n
        worst = max(worst, d)


# ---------------------------------------------------------------------------- the run


@dataclass
class BenchTables:
    """The run's tidy tables, as they grow case by case."""

    results: list[dict] = field(default_factory=list)
    staged: list[dict] = field(default_factory=list)
    parity: list[dict] = field(default_factory=list)
    contributions: list[dict] = field(default_factory=list)
    hist_gap: list[dict] = field(default_factory=list)

    def frames(self) -> dict[str, pd.DataFrame]:
        cols = {
            "results": RESULT_COLUMNS, "staged": STAGED_COLUMNS,
            "parity": PARITY_COLUMNS, "contributions": CONTRIBUTION_COLUMNS,
            "hist_gap": HIST_GAP_COLUMNS,
        }
        return {name: pd.DataFrame(getattr(self, name), columns=c) for name, c in cols.items()}

    def save(self, run) -> None:
        for name, df in self.frames().items():
            run.write_table(df, name)


CASE_COLUMNS = ["dataset", "size", "task", "loss"]
RESULT_COLUMNS = [*CASE_COLUMNS, "method", "status", "message", "n_train", "n_test", "n_features",
                  "n_classes", "n_estimators", "max_depth", "device", "threads", "fit_s", "fit_repeats",
                  "metric", "train_loss", "test_loss"]
STAGED_COLUMNS = [*CASE_COLUMNS, "method", "split", "stage", "loss_value", "residual_rms"]
PARITY_COLUMNS = [*CASE_COLUMNS, "method", "reference", "n_stages", "max_abs_diff",
                  "first_diff_stage", "test_loss", "reference_test_loss"]
HIST_GAP_COLUMNS = [*CASE_COLUMNS, "n_test", "metric", "exact_test_loss", "hist_test_loss", "gap",
                    "rel_gap", "gap_se"]
CONTRIBUTION_COLUMNS = [*CASE_COLUMNS, "method", "stage", "correction_norm", "base_norm", "ratio",
                        "correction_rms"]

# progress events: (kind, message) with kind in {"case", "fit", "skip", "error", "parity"}
Progress = Callable[[str, str], None]


def _case_key(case: Case) -> dict:
    return {"dataset": case.dataset, "size": case.size, "task": case.task, "loss": case.loss}


def run_case(case: Case, data: Split, cfg: BoostingBenchConfig, tables: BenchTables,
             progress: Progress) -> None:
    """Fit every method on one case and append its rows to ``tables``."""
    key = _case_key(case)
    classes = np.unique(data.y_train)
    y_tr = np.searchsorted(classes, data.y_train) if case.task != "regression" else data.y_train
    y_te = np.searchsorted(classes, data.y_test) if case.task != "regression" else data.y_test
    base_row = {**key, "n_train": data.n_train, "n_test": int(data.X_test.shape[0]),
                "n_features": data.n_features, "n_classes": data.n_classes,
                "n_estimators": cfg.n_estimators, "max_depth": cfg.max_depth,
                "threads": cfg.threads, "metric": METRIC_NAMES[case.loss]}
    fitted: dict[str, Any] = {}
    final_test: dict[str, float] = {}
    test_rows: dict[str, np.ndarray] = {}  # per-row final test loss
    for method in cfg.methods:
        device = cfg.device if method == "ours-hist" else "cpu"
        row = {**base_row, "method": method, "device": device, "status": "ok", "message": ""}
        reason = method_unsupported(method, case)
        if reason:
            tables.results.append({**row, "status": "unsupported", "message": reason})
            progress("skip", f"  {method:<13} unsupported: {reason}")
            continue
        try:
            est = make_estimator(method, case, cfg)
            times = [timed_fit(est, data.X_train, data.y_train, device)]
            while times[0] < FAST_FIT_S and len(times) < FAST_FIT_REPEATS:  # a fast fit: its median of 3
                est = make_estimator(method, case, cfg)
                times.append(timed_fit(est, data.X_train, data.y_train, device))
            row["fit_s"], row["fit_repeats"] = float(np.median(times)), len(times)
            finals = {}
            for split, X, y in (("train", data.X_train, y_tr), ("test", data.X_test, y_te)):
                for m, raw in enumerate(staged_raw(est, X, case.task), start=1):
                    value, rms = stage_metrics(y, raw, case.loss, case.task)
                    tables.staged.append({**key, "method": method, "split": split, "stage": m,
                                          "loss_value": value, "residual_rms": rms})
                    finals[split] = value
                if split == "test":
                    test_rows[method] = pointwise_metric(y, raw, case.loss, case.task)
        except Exception as e:  # recorded, shown, and counted in the headline
            msg = f"{type(e).__name__}: {e}"
            tables.results.append({**row, "status": "error", "message": msg})
            progress("error", f"  {method:<13} FAILED: {msg}")
            continue
        row.update(train_loss=finals.get("train"), test_loss=finals.get("test"))
        tables.results.append(row)
        fitted[method] = est
        final_test[method] = finals.get("test", float("nan"))
        progress("fit", f"  {method:<13} fit {row['fit_s']:8.3f} s   test {row['metric']} "
                        f"{row['test_loss']:.6g}")
        _record_contributions(method, est, data, key, tables)
    if "ours-hist" in test_rows and "ours-exact" in test_rows:
        exact, hist = final_test["ours-exact"], final_test["ours-hist"]
        gap, se = paired_gap(test_rows["ours-hist"], test_rows["ours-exact"])
        tables.hist_gap.append({**key, "n_test": base_row["n_test"], "metric": base_row["metric"],
                                "exact_test_loss": exact, "hist_test_loss": hist, "gap": gap,
                                "rel_gap": gap / abs(exact) if exact else float("nan"), "gap_se": se})
    for ours, ref in PARITY_PAIRS:
        if ours in fitted and ref in fitted:
            worst, n_st, first = 0.0, 0, None
            for X in (data.X_train, data.X_test):
                d, n_st, f = max_abs_diff(staged_raw(fitted[ours], X, case.task),
                                          staged_raw(fitted[ref], X, case.task))
                worst = d if np.isnan(d) else max(worst, d)
                first = f if first is None else (first if f is None else min(first, f))
                if np.isnan(worst):
                    break
            tables.parity.append({**key, "method": ours, "reference": ref, "n_stages": n_st,
                                  "max_abs_diff": worst, "first_diff_stage": first,
                                  "test_loss": final_test[ours], "reference_test_loss": final_test[ref]})
            progress("parity", f"  parity {ours} vs {ref}: max |diff| = {worst:.3g}"
                               + ("" if first is None else f" (first at stage {first})"))


def _record_contributions(method: str, est, data: Split, key: dict, tables: BenchTables) -> None:
    """Per-stage correction sizes, from the shared Stagewise abstraction (ours only)."""
    from residuals.core import Stagewise, contribution_table

    if not isinstance(est, Stagewise):
        return
    table = contribution_table(est, data.X_train)
    scale = float(np.sqrt(data.n_train))
    for r in table.itertuples(index=False):
        tables.contributions.append({**key, "method": method, "stage": int(r.stage) + 1,
                                     "correction_norm": r.correction_norm, "base_norm": r.base_norm,
                                     "ratio": r.ratio, "correction_rms": r.correction_norm / scale})


def run_benchmark(cfg: BoostingBenchConfig, run=None, *, progress: Progress | None = None) -> BenchTables:
    """Run every case of ``cfg``; save the tables into ``run`` (a RunDir) after each case.

    Threads are limited to ``cfg.threads`` for every learner (threadpoolctl for
    OpenMP/BLAS, ``torch.set_num_threads`` for torch), so timings are fair.
    """
    from threadpoolctl import threadpool_limits

    cfg.validate()
    progress = progress or (lambda kind, msg: None)
    cases = list(iter_cases(cfg))
    if not cases:
        raise ValueError("this configuration has no cases (no chosen loss fits the chosen datasets)")
    tables = BenchTables()
    torch_threads = None
    if any(m.startswith("ours") for m in cfg.methods):
        import torch
        torch_threads = torch.get_num_threads()
        torch.set_num_threads(cfg.threads)
    loaded: dict[tuple[str, int | None], Split] = {}
    try:
        with threadpool_limits(limits=cfg.threads):
            for i, case in enumerate(cases, start=1):
                dkey = (case.dataset, case.size)
                if dkey not in loaded:
                    loaded.clear()  # one dataset in memory at a time
                    loaded[dkey] = load_dataset(case.dataset, case.size, seed=cfg.seed,
                                                test_size=cfg.test_size)
                data = loaded[dkey]
                progress("case", f"[{i}/{len(cases)}] {case.label}  ({data.n_train:,} train x "
                                 f"{data.n_features} features)")
                run_case(case, data, cfg, tables, progress)
                if run is not None:
                    tables.save(run)
    finally:
        if torch_threads is not None:
            import torch
            torch.set_num_threads(torch_threads)
        if run is not None:
            tables.save(run)
    return tables
