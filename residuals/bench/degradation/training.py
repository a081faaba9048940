"""One run of the sweep: load the data (once per process), train one net from its checkpoint,
probe it, and return its rows of the three tables (:class:`RunOutcome`)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from residuals.bench.degradation.config import DegradationConfig, RunSpec
from residuals.bench.degradation.fusion import FusedJob
from residuals.runs import RunDir

__all__ = [
    "RunOutcome",
    "checkpoint_path",
    "finished_runs",
    "load_data",
    "probe_model",
    "train_job",
    "train_run",
]


def finished_runs(run: RunDir) -> set[tuple[str, int, int]]:
    """(variant, depth, seed) of the runs already recorded in the run's ``runs.csv``, once
    the tables have passed their check (:func:`residuals.bench.degradation.tables.check_tables`)."""
    from residuals.bench.degradation.tables import SweepTables

    return SweepTables(run).finished()


def checkpoint_path(run_path: str | os.PathLike, spec: RunSpec) -> Path:
    return Path(run_path) / "checkpoints" / f"{spec.key}.pt"


@dataclass
class RunOutcome:
    """What one finished run adds to the sweep's three tables."""

    spec: RunSpec
    history: pd.DataFrame  # results.csv rows: one per epoch
    probes: pd.DataFrame  # probes.csv rows: one per block
    summary: dict  # the runs.csv row


_DATA_CACHE: dict[tuple, object] = {}


def load_data(
    cfg: DegradationConfig, device: str, data_dir: str | None = None, *, download: bool = False
):
    """The sweep's dataset on ``device``, loaded once per process and kept for its runs.

    Every run gets the same split (seed 0). Raises
    :class:`residuals.data.DatasetError` with a message saying what to do when
    files are missing (and cannot be downloaded) or fail their checksum.
    """
    from residuals.data import load_dataset

    key = (cfg.dataset, str(device), data_dir, cfg.val_size)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        _DATA_CACHE[key] = load_dataset(
            cfg.dataset,
            data_dir=data_dir,
            device=device,
            download=download,
            val_size=cfg.val_size,
            seed=0,
        )
    return _DATA_CACHE[key]


def train_run(
    spec: RunSpec,
    cfg: DegradationConfig,
    *,
    device: str,
    run_path: str | os.PathLike,
    data_dir: str | None = None,
    on_epoch: Callable | None = None,
) -> RunOutcome:
    """Train one net of the sweep (resuming from its checkpoint if there is one), then probe it.

    The data must already be on disk (the CLI loads it once, with downloads, before
    any training); the model's weights are initialised from ``spec.seed``.
    """
    job = FusedJob(0, (spec,))
    return train_job(
        job,
        cfg,
        device=device,
        run_path=run_path,
        data_dir=data_dir,
        on_epoch=None if on_epoch is None else lambda s, r: on_epoch(r),
    )[0]


def train_job(
    job: FusedJob,
    cfg: DegradationConfig,
    *,
    device: str,
    run_path: str | os.PathLike,
    data_dir: str | None = None,
    on_epoch: Callable | None = None,
) -> list[RunOutcome]:
    """Train a job's runs -- one alone, or several as one fused model
    (:func:`residuals.train.train_many`) -- each from its checkpoint, then probe each.

    ``on_epoch(spec, record)`` follows every run's every epoch. Each run's row in
    runs.csv names the job (``job``) and its size (``job_members``); ``wall_s`` is the job's.
    """
    import torch

    from residuals.nets import build_model
    from residuals.train import train, train_many

    start = time.perf_counter()
    data = load_data(cfg, device, data_dir)
    models = []
    for spec in job.specs:
        torch.manual_seed(spec.seed)
        # the paper's CIFAR nets (option-A shortcuts) for every depth 6n+2, from the registry
        models.append(
            build_model(
                spec.registry_name, in_channels=data.in_channels, num_classes=data.num_classes
            )
        )
    paths = [checkpoint_path(run_path, spec) for spec in job.specs]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
    cfgs = [cfg.train_config(s.depth, s.seed, device) for s in job.specs]
    if len(job.specs) == 1:
        spec = job.specs[0]
        results = [
            train(
                models[0],
                data,
                cfgs[0],
                checkpoint_path=paths[0],
                resume=paths[0].is_file(),
                on_epoch=None if on_epoch is None else lambda r: on_epoch(spec, r),
            )
        ]
    else:
        results = train_many(
            models,
            data,
            cfgs,
            checkpoint_paths=paths,
            resume=True,
            fuse=True,
            on_epoch=None if on_epoch is None else lambda i, r: on_epoch(job.specs[i], r),
        )
    probes = [probe_model(r.model, data, cfg.probe_batch) for r in results]
    wall = time.perf_counter() - start
    return [
        _outcome(spec, result, probe, device=device, wall=wall, job=job)
        for spec, result, probe in zip(job.specs, results, probes)
    ]


def _outcome(
    spec: RunSpec, result, probes: pd.DataFrame, *, device: str, wall: float, job: FusedJob
) -> RunOutcome:
    import torch

    status = "diverged" if result.diverged else "complete"
    ids = {"model": spec.model, "variant": spec.variant, "depth": spec.depth, "seed": spec.seed}
    history = pd.DataFrame([{**ids, **asdict(r), "status": status} for r in result.history])
    probes = pd.concat([pd.DataFrame([ids] * len(probes)), probes.reset_index(drop=True)], axis=1)
    last = result.history[-1]  # the trainer records at least one epoch
    summary = {
        **ids,
        "status": status,
        "epochs": len(result.history),
        "final_train_error": last.train_error,
        "final_test_error": last.test_error,
        "best_test_error": float(history["test_error"].min()),
        # median over epochs: the first epoch carries one-off warm-up costs
        "images_per_s": float(history["images_per_s"].median()),
        "train_s": round(float(history["seconds"].sum()), 3),  # all epochs, across resumes
        "wall_s": round(wall, 3),  # this session: data, training (after any resume) and probes
        "device": device,
        "threads": torch.get_num_threads(),
        "replicas": result.replicas,  # CPU data parallelism: the batch split over model copies
        "precision": "bf16" if result.amp else "fp32",
        "job": job.name,  # the job that trained it: alone, or fused with others
        "job_members": len(job.specs),
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
        columns={"std": "response_std", "mean": "response_mean"}
    )
    grads = gradient_norms(model, x, y).rename(columns={"loss": "probe_loss"})
    return responses.merge(grads, on=["block", "stage"], how="outer").sort_values(
        "block", ignore_index=True
    )


def probe_inputs(data, n: int):
    """A fixed batch: the first ``n`` test images, normalised as the trainer feeds them to the net."""
    from residuals.data import normalize

    return normalize(data.test_x[:n], data.mean, data.std), data.test_y[:n]
