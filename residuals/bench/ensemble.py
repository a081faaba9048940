"""The ensemble benchmark: do residual networks behave like boosted ensembles?

Veit, Wilber and Belongie (NeurIPS 2016, "Residual networks behave like ensembles
of relatively shallow networks") deleted single blocks from a trained ResNet-110
at test time: its CIFAR-10 error barely moved, while deleting one layer of a
plain VGG-style net sent it to chance; deleting several blocks raised the error
smoothly. A boosted ensemble should behave that way by construction. This
bench trains four families on one dataset (:mod:`residuals.bench.ensemble_families`:
a booster, a ResNet, its plain twin, and the ResNet trained block by block like
a booster) and measures each through :class:`residuals.core.Stagewise` alone
(:mod:`residuals.bench.ensemble_measure`)::

    cfg = PRESETS["digits"]                      # the default
    run = RunDir.create("reports", bench="ensemble", dataset=cfg.dataset, config=cfg.to_dict())
    run_bench(run, cfg, device="cpu")            # lesions.csv, staged.csv, contributions.csv,
    ensemble_verdict(run.read_table("lesions"))  # models.csv

The verdict (:func:`ensemble_verdict`) is a rule on ``lesions.csv``, stated here
once. For a model, let ``D`` be the mean over its stages of the test error with
that stage deleted minus the test error of the whole model, in percentage
points. Veit's contrast is reproduced when, on every seed,

    D(residual) <= CONTRAST_FACTOR * D(plain)   and   D(plain) >= PLAIN_MIN_POINTS

(factor 1/4, 10 points): deleting a block of the residual net costs at most a
quarter of what deleting a block of the plain net costs, and deleting a plain
block does break the plain net. The booster's and the stagewise net's ``D``
are reported beside it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import pandas as pd

from residuals.bench.ensemble_families import FAMILIES, FitRequest, fit_family
from residuals.bench.ensemble_measure import LESION_COLUMNS, measure

__all__ = [
    "CONTRAST_FACTOR",
    "DEFAULT_FAMILIES",
    "DEFAULT_PRESET",
    "PLAIN_MIN_POINTS",
    "PRESETS",
    "EnsembleConfig",
    "Verdict",
    "ensemble_verdict",
    "lesion_summary",
    "load_data",
    "run_bench",
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
    # the stagewise net: each block trains alone for stage_epochs (residuals.stagewise)
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
        if self.train_size is not None and (
            not isinstance(self.train_size, int) or self.train_size < 2
        ):
            raise ValueError(
                f"train_size must be an integer >= 2 (or None: all), got {self.train_size!r}"
            )
        if self.depth < 8 or (self.depth - 2) % 6:
            raise ValueError(
                f"depth must be 6n+2 (8, 14, 20, 32, 44, 56, 110, ...), got {self.depth}"
            )
        if not 0 < self.learning_rate or not 0 < self.subsample <= 1:
            raise ValueError("learning_rate must be > 0 and subsample in (0, 1]")

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


PRESETS: dict[str, EnsembleConfig] = {
    "digits": EnsembleConfig(),
    # GPU: ResNet-56 and its twin; a booster of comparable size in learned numbers
    # (500 iterations x 10 trees of depth 6: 635k leaf values and thresholds; ResNet-56
    # has 0.86M weights).
    "fashion-mnist": EnsembleConfig(
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
    # Veit et al.'s setting: CIFAR-10 ResNet-110 with He et al.'s recipe (lr 0.1, /10 at 50%
    # and 75% of 182 epochs, lr/10 until training error < 80%, pad-crop-flip); GPU.
    "paper": EnsembleConfig(
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
}
DEFAULT_PRESET = "digits"


# --------------------------------------------------------------------------- data
_DATA_CACHE: dict[tuple, object] = {}


def load_data(
    cfg: EnsembleConfig, device: str, data_dir: str | None = None, *, download: bool = False
):
    """The run's dataset on ``device`` (a seeded subset of ``train_size`` training images
    when asked), loaded once per process."""
    import torch

    from residuals.data import load_dataset

    key = (cfg.dataset, str(device), data_dir, cfg.train_size)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        data = load_dataset(cfg.dataset, data_dir=data_dir, device=device, download=download)
        if cfg.train_size is not None and cfg.train_size < len(data.train_y):
            g = torch.Generator().manual_seed(0)
            keep = torch.randperm(len(data.train_y), generator=g)[: cfg.train_size].sort().values
            keep = keep.to(data.train_y.device)
            data.train_x, data.train_y = data.train_x[keep], data.train_y[keep]
            data.extra["train_size"] = cfg.train_size
        _DATA_CACHE[key] = data
    return _DATA_CACHE[key]


# --------------------------------------------------------------------------- one model
def plan(cfg: EnsembleConfig) -> list[tuple[str, int]]:
    """Every (family, seed) of the run, seed by seed."""
    return [(family, seed) for seed in range(cfg.seeds) for family in cfg.families]


def fit_and_measure(
    family: str,
    seed: int,
    cfg: EnsembleConfig,
    *,
    device: str,
    run_path: str | Path,
    data_dir: str | None = None,
    fit: Callable | None = None,
) -> dict[str, pd.DataFrame]:
    """Train one model and measure it; return its rows of every table."""
    import torch

    start = time.perf_counter()
    data = load_data(cfg, device, data_dir)
    request = FitRequest(
        config=cfg,
        data=data,
        seed=seed,
        device=device,
        checkpoint_dir=Path(run_path) / "checkpoints" / f"{family}-seed{seed}",
    )
    fitted = fit(request) if fit is not None else fit_family(family, request)
    fit_wall = time.perf_counter() - start
    t0 = time.perf_counter()
    frames = measure(
        fitted,
        data,
        draws=cfg.draws,
        points=cfg.points,
        seed=seed,
        family=family,
        batch_size=cfg.eval_batch_size,
        probe_images=cfg.probe_images,
    )
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
    measure_s = time.perf_counter() - t0
    lesions = frames["lesions"]
    whole = float(lesions.loc[lesions["dropped"] == 0, "test_error"].iloc[0])
    frames["models"] = pd.DataFrame(
        [
            {
                "model": fitted.name,
                "family": family,
                "seed": seed,
                "n_stages": fitted.model.n_stages_,
                "stage_label": fitted.stage_label,
                "parameters": fitted.parameters,
                "status": "diverged" if fitted.diverged else "complete",
                "train_error": fitted.train_error,
                "test_error": whole,
                "train_s": round(fitted.train_s, 3),
                "fit_wall_s": round(fit_wall, 3),
                "measure_s": round(measure_s, 3),
                "device": str(device),
                "threads": torch.get_num_threads(),
            }
        ]
    )
    return frames


class _Tables:
    """The run's tables, re-written atomically after every finished model; ``models.csv``
    last, so rows of a model missing from it (a run stopped between writes) are dropped."""

    def __init__(self, run):
        self.run = run
        self.frames = {
            name: run.read_table(name) if run.has_table(name) else pd.DataFrame() for name in TABLES
        }
        models = self.frames["models"]
        done = models[KEYS] if not models.empty else pd.DataFrame(columns=KEYS)
        for name in TABLES[:-1]:
            if not self.frames[name].empty:
                self.frames[name] = self.frames[name].merge(done, on=KEYS, how="inner")

    def done(self) -> set[tuple[str, int]]:
        models = self.frames["models"]
        return (
            set()
            if models.empty
            else {(str(f), int(s)) for f, s in models[KEYS].itertuples(index=False)}
        )

    def add(self, frames: dict[str, pd.DataFrame]) -> None:
        for name in TABLES:
            old, new = self.frames[name], frames[name]
            df = new if old.empty else pd.concat([old, new], ignore_index=True)
            self.frames[name] = df
            self.run.write_table(df, name)


def run_bench(
    run,
    cfg: EnsembleConfig,
    *,
    device: str,
    jobs: int = 1,
    data_dir: str | None = None,
    echo: Callable[[str], None] = print,
) -> Verdict:
    """Train and measure every (family, seed) not yet in the run's ``models.csv``.

    ``jobs > 1`` trains that many models at once in spawned worker processes with
    ``cores // jobs`` torch threads each. Tables are written after every model, so
    an interrupted run keeps what finished and resumes from the nets' checkpoints.
    Returns the verdict on the finished models.
    """
    from residuals.bench.ensemble_pool import run_tasks

    tables = _Tables(run)
    done = tables.done()
    todo = [(f, s) for f, s in plan(cfg) if (f, s) not in done]
    if done:
        echo(f"resuming: {len(done)} of {len(done) + len(todo)} models already measured")
    total = len(done) + len(todo)

    def finished(task, frames) -> None:
        tables.add(frames)
        row = frames["models"].iloc[0]
        single = frames["lesions"].query("dropped == 1")["test_error"].mean()
        echo(
            f"[{len(tables.done())}/{total}] {row['model']} ({row['family']}) seed {row['seed']}:"
            f" test error {100 * row['test_error']:.1f}%, one stage deleted "
            f"{100 * single:.1f}% on average; trained in {row['train_s']:.1f} s, "
            f"measured in {row['measure_s']:.1f} s"
        )

    run_tasks(
        todo,
        cfg,
        device=device,
        jobs=jobs,
        run_path=str(run.path),
        data_dir=data_dir,
        on_result=finished,
        fits={f: FAMILIES[f] for f in cfg.families},
    )
    return ensemble_verdict(tables.frames["lesions"])


# --------------------------------------------------------------------------- verdict
@dataclass(frozen=True)
class Verdict:
    """The measured answer: is Veit's contrast reproduced on every seed?"""

    reproduced: bool | None  # None: not enough finished models to say
    headline: str
    notes: tuple[str, ...] = ()


def lesion_summary(lesions: pd.DataFrame) -> pd.DataFrame:
    """Per (family, model, seed): whole-model error and single-stage lesion increases.

    Columns ``family, model, seed, n_stages, test_error, single_mean, single_max,
    single_increase`` (errors as fractions; ``single_increase`` = ``D``, the mean
    increase in percentage points).
    """
    rows = []
    for (family, model, seed), g in lesions.groupby(["family", "model", "seed"], sort=True):
        whole = g.loc[g["dropped"] == 0, "test_error"]
        single = g.loc[g["dropped"] == 1, "test_error"]
        if whole.empty or single.empty:
            continue
        base = float(whole.iloc[0])
        rows.append(
            {
                "family": family,
                "model": model,
                "seed": int(seed),
                "n_stages": len(single),
                "test_error": base,
                "single_mean": float(single.mean()),
                "single_max": float(single.max()),
                "single_increase": 100.0 * (float(single.mean()) - base),
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "family",
            "model",
            "seed",
            "n_stages",
            "test_error",
            "single_mean",
            "single_max",
            "single_increase",
        ],
    )


def ensemble_verdict(
    lesions: pd.DataFrame, *, factor: float = CONTRAST_FACTOR, plain_min: float = PLAIN_MIN_POINTS
) -> Verdict:
    """Apply the rule of the module docstring to ``lesions.csv``."""
    summary = (
        lesion_summary(lesions)
        if not lesions.empty
        else lesion_summary(pd.DataFrame(columns=LESION_COLUMNS))
    )
    by = {f: g.set_index("seed")["single_increase"] for f, g in summary.groupby("family")}
    if "residual" not in by or "plain" not in by:
        return Verdict(
            None,
            "no verdict: the rule compares the residual net with the plain net, "
            "and this run has " + (", ".join(sorted(by)) or "no finished model"),
        )
    seeds = sorted(set(by["residual"].index) & set(by["plain"].index))
    if not seeds:
        return Verdict(None, "no verdict: no seed has both a residual and a plain net measured")
    failed = [
        s
        for s in seeds
        if not (by["plain"][s] >= plain_min and by["residual"][s] <= factor * by["plain"][s])
    ]
    names = dict(zip(summary["family"], summary["model"]))

    def mean(family: str) -> str:
        v = by[family].loc[[s for s in seeds if s in by[family].index]].mean()
        return f"{v:.1f} points" if math.isfinite(v) else "n/a"

    extra = [f"{f} ({names[f]}): {mean(f)}" for f in by if f not in ("residual", "plain")]
    detail = (
        f"deleting one block raised the test error of {names['residual']} by {mean('residual')} "
        f"on average, of {names['plain']} by {mean('plain')}"
        + (f" (deleting one stage: {'; '.join(extra)})" if extra else "")
        + f"; {len(seeds)} seed{'s' * (len(seeds) > 1)}"
    )
    rule = f"rule: on every seed, residual <= {factor:g} x plain and plain >= {plain_min:g} points"
    notes = tuple(
        f"seed {s}: residual {by['residual'][s]:.1f} vs plain {by['plain'][s]:.1f} points"
        for s in failed
    )
    if not failed:
        return Verdict(True, f"residual nets behave like ensembles: {detail} ({rule})", notes)
    return Verdict(
        False,
        f"Veit's contrast not reproduced on seed(s) "
        f"{', '.join(map(str, failed))}: {detail} ({rule})",
        notes,
    )
