"""The degradation benchmark: plain vs residual nets at several depths.

He et al. 2015 ("Deep residual learning for image recognition", Sec. 4.2, Fig. 6)
observed that a deeper *plain* network (no skip connections) reaches a HIGHER
training error than a shallower one -- an optimisation failure, not overfitting --
while the same nets with identity shortcuts get better with depth. This module
runs that experiment as a sweep over ``variants x depths x seeds``::

    cfg = PRESETS["digits"]                       # the default: 47 s measured on a shared 2-core CPU
    run = RunDir.create("reports", bench="degradation", dataset=cfg.dataset, config=cfg.to_dict())
    run_sweep(run, cfg, device="cpu", jobs=2)     # results.csv, runs.csv, probes.csv
    degradation_verdict(run.read_table("runs")).headline

Tables written to the run folder (tidy, one observation per row):

* ``results.csv``: one row per (model, seed, epoch) with every field of the
  trainer's ``EpochRecord`` and the run's ``status`` (``complete`` or ``diverged``);
* ``runs.csv``: one row per (model, seed): final train/test error, training and wall
  seconds, images/s, status;
* ``probes.csv``: one row per (model, seed, block), measured after training on a
  fixed batch of test images: the std of each residual function's output (paper
  Fig. 7) and the gradient norms at each block.

The verdict (:func:`degradation_verdict`) is a rule on ``runs.csv``, stated here
once: with ``d0`` the shallowest and ``d1`` the deepest depth, and every error the
mean final *training* error over the seeds that did not diverge,

    reproduced  <=>  plain[d1] - plain[d0] > max(DEGRADATION_MARGIN, SIGNIFICANCE * se)
                and  resnet[d1] - resnet[d0] <= RESIDUAL_TOLERANCE

in percentage points (margin 1, tolerance 1): the deeper plain net is clearly
worse, the deeper residual net is not. ``se`` is the standard error of the
plain gap over seeds, ``sqrt(s1**2 / n1 + s0**2 / n0)`` (0 when a cell has one
seed), and SIGNIFICANCE is 2: the gap must stand out of the seed-to-seed spread.
He et al. (2015, Fig. 6) report gaps of a few points on CIFAR-10; on
Fashion-MNIST (15 epochs) plain-56 ended 4.2 points above plain-20, and on
digits 50-75 points above.

Diverged runs (a non-finite loss) are left out of the means and named in the
verdict; a cell with no finished run gives no verdict (``None``).

Independent (model, seed) runs go to worker processes with one torch thread each
(measured on a shared 2-core machine: two 1-thread processes beat one 2-thread
process); every run checkpoints each epoch under ``<run>/checkpoints/`` so an
interrupted sweep resumes where it stopped (:func:`run_sweep` skips the runs
already in ``runs.csv``).
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import signal
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from queue import Empty
from typing import Callable

import pandas as pd

from residuals.report.runs import RunDir

__all__ = [
    "VARIANTS", "PRESETS", "DEGRADATION_MARGIN", "RESIDUAL_TOLERANCE", "SIGNIFICANCE",
    "DegradationConfig", "RunSpec", "RunOutcome", "Verdict",
    "plan_runs", "finished_runs", "load_data", "train_run", "run_sweep", "default_jobs", "worker_threads",
    "degradation_verdict", "final_errors", "Progress",
]

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


def finished_runs(run: RunDir) -> set[tuple[str, int, int]]:
    """(variant, depth, seed) of the runs already recorded in the run's ``runs.csv``."""
    if not run.has_table("runs"):
        return set()
    runs = run.read_table("runs")
    return {(str(v), int(d), int(s)) for v, d, s in runs[RUN_KEYS].itertuples(index=False)}


def checkpoint_path(run_path: str | os.PathLike, spec: RunSpec) -> Path:
    return Path(run_path) / "checkpoints" / f"{spec.key}.pt"


@dataclass
class RunOutcome:
    """What one finished run adds to the sweep's three tables."""

    spec: RunSpec
    history: pd.DataFrame   # results.csv rows: one per epoch
    probes: pd.DataFrame    # probes.csv rows: one per block
    summary: dict           # the runs.csv row


_DATA_CACHE: dict[tuple, object] = {}


def load_data(cfg: DegradationConfig, device: str, data_dir: str | None = None, *,
              download: bool = False):
    """The sweep's dataset on ``device``, loaded once per process and kept for its runs.

    Every run gets the same split (seed 0). Raises
    :class:`residuals.data.DatasetError` with a message saying what to do when
    files are missing (and cannot be downloaded) or fail their checksum.
    """
    from residuals.data import load_dataset

    key = (cfg.dataset, str(device), data_dir, cfg.val_size)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        _DATA_CACHE[key] = load_dataset(cfg.dataset, data_dir=data_dir, device=device,
                                        download=download, val_size=cfg.val_size, seed=0)
    return _DATA_CACHE[key]


def train_run(spec: RunSpec, cfg: DegradationConfig, *, device: str, run_path: str | os.PathLike,
              data_dir: str | None = None, on_epoch: Callable | None = None) -> RunOutcome:
    """Train one net of the sweep (resuming from its checkpoint if there is one), then probe it.

    The data must already be on disk (the CLI loads it once, with downloads, before
    any training); the model's weights are initialised from ``spec.seed``.
    """
    import torch

    from residuals.nets import cifar_resnet
    from residuals.train import train

    start = time.perf_counter()
    data = load_data(cfg, device, data_dir)
    name = spec.model
    torch.manual_seed(spec.seed)
    # the paper's CIFAR nets (option-A shortcuts) for every depth 6n+2 -- also 50, which the
    # name registry would resolve to the ImageNet-style ResNet-50
    model = cifar_resnet(spec.depth, skip=spec.skip, in_channels=data.in_channels,
                         num_classes=data.num_classes)
    ckpt = checkpoint_path(run_path, spec)
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    result = train(model, data, cfg.train_config(spec.depth, spec.seed, device),
                   checkpoint_path=ckpt, resume=ckpt.is_file(), on_epoch=on_epoch)
    status = "diverged" if result.diverged else "complete"
    probes = probe_model(result.model, data, cfg.probe_batch)
    wall = time.perf_counter() - start

    ids = {"model": name, "variant": spec.variant, "depth": spec.depth, "seed": spec.seed}
    history = pd.DataFrame([{**ids, **asdict(r), "status": status} for r in result.history])
    probes = pd.concat([pd.DataFrame([ids] * len(probes)), probes.reset_index(drop=True)], axis=1)
    last = result.history[-1]           # the trainer records at least one epoch
    summary = {
        **ids,
        "status": status,
        "epochs": len(result.history),
        "final_train_error": last.train_error,
        "final_test_error": last.test_error,
        "best_test_error": float(history["test_error"].min()),
        # median over epochs: the first epoch carries one-off warm-up costs
        "images_per_s": float(history["images_per_s"].median()),
        "train_s": round(float(history["seconds"].sum()), 3),   # all epochs, across resumes
        "wall_s": round(wall, 3),   # this session: data, training (after any resume) and probes
        "device": device,
        "threads": torch.get_num_threads(),
        "replicas": result.replicas,   # CPU data parallelism: the batch split over model copies
        "precision": "bf16" if result.amp else "fp32",
    }
    return RunOutcome(spec, history, probes, summary)


def probe_model(model, data, n: int) -> pd.DataFrame:
    """Layer responses (Fig. 7) and gradient norms per block, on the first ``n`` test images.

    Returns one row per block: ``block, stage, response_std, response_mean, input_grad_norm,
    param_grad_norm, input_norm`` (``||x_l||``) and ``probe_loss`` (the batch's loss, every row).
    """
    from residuals.nets.probes import gradient_norms, layer_responses

    x, y = probe_inputs(data, n)
    responses = layer_responses(model, x)[["block", "stage", "std", "mean"]].rename(
        columns={"std": "response_std", "mean": "response_mean"})
    grads = gradient_norms(model, x, y).rename(columns={"loss": "probe_loss"})
    return responses.merge(grads, on=["block", "stage"], how="outer").sort_values("block", ignore_index=True)


def probe_inputs(data, n: int):
    """A fixed batch: the first ``n`` test images, normalised as the trainer feeds them to the net."""
    from residuals.data import normalize

    return normalize(data.test_x[:n], data.mean, data.std), data.test_y[:n]


# --------------------------------------------------------------------------- the sweep
CUDA_JOBS = 4  # runs sharing one GPU; see default_jobs


def cuda_mps_running() -> bool:
    """Whether NVIDIA's MPS control daemon is up (its pipe in ``$CUDA_MPS_PIPE_DIRECTORY``)."""
    return (Path(os.environ.get("CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps")) / "control").exists()


def default_jobs(device: str) -> int:
    """Worker processes: one per core on the CPU (1 thread each), :data:`CUDA_JOBS` on a GPU.

    A CIFAR-sized net at batch 128 leaves most of a big GPU idle, even with its
    step replayed as one CUDA graph. Measured on one H100: the fashion-mnist
    preset (24 runs) took 5.8 min with 4 processes and NVIDIA's MPS daemon
    running (kernels of the 4 run concurrently), where its measured per-step
    times add up to 10.7 min for one run at a time; with 8 processes it took
    5.5 min. Without MPS the processes are time-sliced; a whole sweep was not
    measured that way. Threads in one process failed to capture their graphs
    and ran slower than one process.
    """
    if str(device).startswith("cuda"):
        return CUDA_JOBS
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def worker_threads(jobs: int) -> int:
    """Torch threads of each of ``jobs`` worker processes: the cores shared out, at least 1."""
    return max(1, default_jobs("cpu") // jobs)


class Progress:
    """Terminal progress: a line per finished epoch with the sweep's ETA.

    Work is counted as ``depth x epochs`` (an epoch's cost grows with depth). The
    ETA divides the work left by a measured rate: the wall-clock rate since the
    first reported epoch once that window spans two epochs (it then includes
    evaluation, probes and every parallel worker); before that, the training
    speed of the epochs seen so far times the number of busy workers.
    """

    def __init__(self, todo: list[RunSpec], cfg: DegradationConfig, *, n_total: int, jobs: int = 1,
                 echo: Callable[[str], None] = print):
        self.cfg, self.echo, self.jobs = cfg, echo, max(1, jobs)
        self.n_total, self.n_todo = n_total, len(todo)
        self.n_finished = 0                      # runs finished in this session
        self.total_work = sum(s.depth * cfg.epochs for s in todo)
        self.work_done = 0.0                     # depth x epochs reported in this session
        self.train_seconds = 0.0                 # their training time
        self.n_epochs = 0
        self.seen: set[RunSpec] = set()
        self.first: tuple[float, float] | None = None   # (time, work done) at the first report
        self.start = time.perf_counter()

    def _eta(self) -> str:
        now = time.perf_counter()
        left = max(self.total_work - self.work_done, 0.0)
        t0, w0 = self.first
        mean_epoch_s = self.train_seconds / self.n_epochs
        if now - t0 >= 2 * mean_epoch_s and self.work_done > w0:
            rate = (self.work_done - w0) / (now - t0)
        elif self.train_seconds > 0:
            busy = max(1, min(self.jobs, self.n_todo - self.n_finished))
            rate = self.work_done / self.train_seconds * busy
        else:
            return "?"
        return _hms(left / rate)

    def epoch(self, spec: RunSpec, record: dict) -> None:
        if spec not in self.seen:                # a resumed run: its earlier epochs are done
            self.seen.add(spec)
            self.total_work -= spec.depth * (int(record["epoch"]) - 1)
        self.work_done += spec.depth
        self.train_seconds += float(record["seconds"])
        self.n_epochs += 1
        if self.first is None:
            self.first = (time.perf_counter(), self.work_done)
        self.echo(
            f"  {spec.label:>10} seed {spec.seed}  epoch {int(record['epoch']):>3}/{self.cfg.epochs}"
            f"  train err {_pct(record['train_error'])}  test err {_pct(record['test_error'])}"
            f"  {record['images_per_s']:,.0f} img/s  {record['seconds']:.1f} s"
            f"  | elapsed {_hms(time.perf_counter() - self.start)}  ETA {self._eta()}"
        )

    def finished(self, outcome: RunOutcome) -> None:
        self.n_finished += 1
        s = outcome.summary
        self.echo(
            f"[{self.n_total - self.n_todo + self.n_finished}/{self.n_total}] {outcome.spec.label} "
            f"seed {outcome.spec.seed} {s['status']}: train err {_pct(s['final_train_error'])}, "
            f"test err {_pct(s['final_test_error'])}, {s['wall_s']:.1f} s, "
            f"{s['images_per_s']:,.0f} img/s"
        )


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _pct(x: float) -> str:
    return "  nan" if x is None or not math.isfinite(x) else f"{100 * x:5.1f}%"


class _Tables:
    """The sweep's three tables, re-written (atomically) after every finished run.

    ``runs.csv`` is written last and is the record of what finished: rows of the
    other tables whose run is not in it (a sweep stopped between two writes) are
    dropped on loading, so a resumed run never appears twice.
    """

    def __init__(self, run: RunDir):
        self.run = run
        frames = {name: run.read_table(name) if run.has_table(name) else pd.DataFrame()
                  for name in RESULT_TABLES}
        done = frames["runs"][RUN_KEYS] if not frames["runs"].empty else pd.DataFrame(columns=RUN_KEYS)
        for name in ("results", "probes"):
            if not frames[name].empty:
                frames[name] = frames[name].merge(done, on=RUN_KEYS, how="inner")
        self.frames = frames

    def add(self, outcome: RunOutcome) -> None:
        new = {"results": outcome.history, "probes": outcome.probes,
               "runs": pd.DataFrame([outcome.summary])}          # runs.csv last: the commit
        for name, rows in new.items():
            old = self.frames[name]
            df = rows if old.empty else pd.concat([old, rows], ignore_index=True)
            sort = [c for c in [*RUN_KEYS, "epoch", "block"] if c in df.columns]
            self.frames[name] = df.sort_values(sort, ignore_index=True)
            self.run.write_table(self.frames[name], name)


# set in each worker process by _init_worker
_PROGRESS_QUEUE = None


def _init_worker(queue, threads: int) -> None:
    global _PROGRESS_QUEUE
    # Ctrl-C reaches the whole process group; the parent alone handles it (and
    # stops the workers), so a worker never dies half-way through a checkpoint write.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch

    torch.set_num_threads(threads)
    _PROGRESS_QUEUE = queue


def _worker_run(spec: RunSpec, cfg: DegradationConfig, device: str, run_path: str,
                data_dir: str | None) -> RunOutcome:
    def report(record) -> None:
        _PROGRESS_QUEUE.put((spec, _record_dict(record)))

    return train_run(spec, cfg, device=device, run_path=run_path, data_dir=data_dir, on_epoch=report)


def _record_dict(record) -> dict:
    return asdict(record) if hasattr(record, "__dataclass_fields__") else dict(record)


def run_sweep(run: RunDir, cfg: DegradationConfig, *, device: str, jobs: int = 1,
              data_dir: str | None = None, echo: Callable[[str], None] = print) -> pd.DataFrame:
    """Train every run of ``cfg`` not yet in the run folder's ``runs.csv``; return ``runs.csv``.

    ``jobs == 1`` trains in this process (with torch's current thread count);
    ``jobs > 1`` trains in that many spawned worker processes with one torch thread
    each (more if there are more cores than jobs). The tables are written after
    every finished run, so an interrupted sweep keeps everything that finished and
    the unfinished runs continue from their per-epoch checkpoints on the next call.
    Exceptions (including KeyboardInterrupt) stop the sweep and propagate.
    """
    planned = plan_runs(cfg)
    done = finished_runs(run)
    todo = [s for s in planned if (s.variant, s.depth, s.seed) not in done]
    tables = _Tables(run)
    jobs = max(1, min(int(jobs), len(todo))) if todo else 1
    progress = Progress(todo, cfg, n_total=len(planned), jobs=jobs, echo=echo)
    partial = sum(checkpoint_path(run.path, s).is_file() for s in todo)
    if done or partial:
        echo(f"resuming: {len(done)} of {len(planned)} runs already finished, {partial} continue "
             f"from their checkpoints, {len(todo) - partial} start from scratch")

    if jobs == 1:
        for spec in todo:
            outcome = train_run(spec, cfg, device=device, run_path=run.path, data_dir=data_dir,
                                on_epoch=lambda r, spec=spec: progress.epoch(spec, _record_dict(r)))
            tables.add(outcome)
            progress.finished(outcome)
    elif todo:
        _run_parallel(todo, cfg, run, device=device, jobs=jobs, data_dir=data_dir,
                      tables=tables, progress=progress)
    return tables.frames["runs"]


def _run_parallel(todo, cfg, run, *, device, jobs, data_dir, tables, progress) -> None:
    ctx = mp.get_context("spawn")   # fork after torch has started threads is unsafe
    queue = ctx.Queue()
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker,
                               initargs=(queue, worker_threads(jobs)))
    try:
        pending = {pool.submit(_worker_run, s, cfg, device, str(run.path), data_dir) for s in todo}
        while pending:
            finished, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
            _drain(queue, progress)
            for future in finished:
                outcome = future.result()   # re-raises the worker's exception
                tables.add(outcome)
                progress.finished(outcome)
        _drain(queue, progress)
    except BaseException:
        _stop_workers(pool)
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    # Every result is in. A worker's interpreter teardown (torch loaded) takes 1-3 s: let the
    # workers exit while the caller writes the report; the interpreter joins them at exit.
    pool.shutdown(wait=False)


def _drain(queue, progress: Progress) -> None:
    while True:
        try:
            spec, record = queue.get_nowait()
        except Empty:
            return
        progress.epoch(spec, record)


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Stop every worker now; each run's last per-epoch checkpoint (written atomically) stays."""
    if hasattr(pool, "terminate_workers"):   # Python >= 3.14
        pool.terminate_workers()
        return
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        if proc.is_alive():
            proc.terminate()
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        proc.join(timeout=10)


# --------------------------------------------------------------------------- verdict
@dataclass(frozen=True)
class Verdict:
    """The measured answer: was the degradation problem reproduced?"""

    reproduced: bool | None   # None: not enough finished runs to say
    headline: str
    notes: tuple[str, ...] = ()


def final_errors(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and count of the final errors per (variant, depth), over non-diverged seeds.

    Columns: ``variant, depth, model, n_seeds, n_diverged, train_error_mean,
    train_error_std, test_error_mean, test_error_std`` (errors as fractions; std is
    the sample std, NaN for a single seed).
    """
    rows = []
    for (variant, depth), g in runs.groupby(["variant", "depth"], sort=True):
        ok = g[g["status"] == "complete"]
        rows.append({
            "variant": variant, "depth": int(depth), "model": model_label(variant, depth),
            "n_seeds": len(ok), "n_diverged": int((g["status"] == "diverged").sum()),
            "train_error_mean": ok["final_train_error"].mean(),
            "train_error_std": ok["final_train_error"].std(),
            "test_error_mean": ok["final_test_error"].mean(),
            "test_error_std": ok["final_test_error"].std(),
        })
    cols = ["variant", "depth", "model", "n_seeds", "n_diverged", "train_error_mean",
            "train_error_std", "test_error_mean", "test_error_std"]
    return pd.DataFrame(rows, columns=cols)


def degradation_verdict(runs: pd.DataFrame, *, margin: float = DEGRADATION_MARGIN,
                        tolerance: float = RESIDUAL_TOLERANCE,
                        significance: float = SIGNIFICANCE) -> Verdict:
    """Apply the rule of the module docstring to ``runs.csv`` (errors as fractions).

    ``margin`` and ``tolerance`` are in percentage points of training error,
    ``significance`` in standard errors of the plain nets' gap.
    """
    if runs.empty:
        return Verdict(None, "no verdict: no run has finished yet")
    variants = set(runs["variant"])
    depths = sorted(int(d) for d in runs["depth"].unique())
    if not set(VARIANTS) <= variants or len(depths) < 2:
        return Verdict(None, "no verdict: the rule compares plain and residual nets at two or more "
                             f"depths (this run has {', '.join(sorted(variants))} at "
                             f"{', '.join(map(str, depths))})")
    d0, d1 = depths[0], depths[-1]
    table = final_errors(runs).set_index(["variant", "depth"])
    notes = []
    for variant in VARIANTS:
        for depth in (d0, d1):
            if (variant, depth) not in table.index:
                return Verdict(None, f"no verdict: {model_label(variant, depth)} has no finished run")
            row = table.loc[(variant, depth)]
            if row["n_diverged"]:
                total = row["n_diverged"] + row["n_seeds"]
                notes.append(f"{model_label(variant, depth)}: {row['n_diverged']} of {total} seeds "
                             "diverged (left out of the mean)")
            if row["n_seeds"] == 0:
                return Verdict(None, f"no verdict: every {model_label(variant, depth)} run diverged "
                                     "(non-finite loss); try a lower --lr or a warm-up", tuple(notes))

    def err(variant, depth) -> float:
        return 100.0 * table.loc[(variant, depth), "train_error_mean"]

    def cell(variant, depth) -> str:
        row = table.loc[(variant, depth)]
        text = f"{100 * row['train_error_mean']:.1f}%"
        if row["n_seeds"] > 1:
            text += f" ± {100 * row['train_error_std']:.1f}"
        return text

    p0, p1 = model_label("plain", d0), model_label("plain", d1)
    r0, r1 = model_label("residual", d0), model_label("residual", d1)
    def var_of_mean(variant, depth) -> float:
        row = table.loc[(variant, depth)]
        n, sd = row["n_seeds"], 100.0 * row["train_error_std"]
        return sd * sd / n if n > 1 and math.isfinite(sd) else 0.0

    se = math.sqrt(var_of_mean("plain", d1) + var_of_mean("plain", d0))
    needed = max(margin, significance * se)
    degraded = err("plain", d1) - err("plain", d0) > needed
    residual_ok = err("residual", d1) - err("residual", d0) <= tolerance
    n = int(table["n_seeds"].max())
    seeds = f" (means over {n} seeds)" if n > 1 else ""
    plain = f"{p1} training error {cell('plain', d1)} {'>' if degraded else 'vs'} {p0} {cell('plain', d0)}"
    resid = f"{r1} {cell('residual', d1)} {'<=' if residual_ok else '>'} {r0} {cell('residual', d0)}"
    if degraded and residual_ok:
        return Verdict(True, f"degradation reproduced: {plain}; {resid}{seeds}", tuple(notes))
    why = []
    if not degraded:
        bar = (f"{margin:g} points" if needed == margin else
               f"{needed:.1f} points ({significance:g} standard errors over seeds)")
        why.append(f"{p1} is not worse than {p0} by more than {bar}")
    if not residual_ok:
        why.append(f"{r1} is worse than {r0} by more than {tolerance:g} points")
    return Verdict(False, f"degradation not reproduced ({'; '.join(why)}): {plain}; {resid}{seeds}",
                   tuple(notes))
