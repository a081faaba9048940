"""Shared pieces of the fault-injection tests: made-up degradation run folders and the
ways of damaging files that the tests inject."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from residuals.bench.degradation import DegradationConfig, model_label
from residuals.runs import RunDir

NAN = math.nan


def degradation_run(
    root,
    name: str,
    *,
    depths=(8, 14),
    seeds: int = 1,
    epochs: int = 3,
    blocks: int = 3,
    diverged=(),
    device: str = "cpu",
    command: str | None = None,
) -> RunDir:
    """A degradation run folder with made-up but well-formed tables: plain nets degrade,
    residual nets do not; ``diverged`` (variant, depth, seed) runs have a NaN loss and NaN
    or infinite probes, as a real diverged run has."""
    cfg = DegradationConfig(depths=tuple(depths), seeds=seeds).replace(
        epochs=epochs, warmup_epochs=epochs / 6
    )
    run = RunDir.create(
        root,
        bench="degradation",
        dataset="digits",
        config=cfg.to_dict(),
        device=device,
        name=name,
        command=command or f"residuals bench degradation --depths {','.join(map(str, depths))}",
    )
    results, runs, probes = [], [], []
    for variant in ("plain", "residual"):
        for depth in depths:
            for seed in range(seeds):
                bad = (variant, depth, seed) in diverged
                ids = {
                    "model": model_label(variant, depth).replace("-", ""),
                    "variant": variant,
                    "depth": depth,
                    "seed": seed,
                }
                final = (
                    0.9 if bad else (0.3 if variant == "plain" and depth == max(depths) else 0.01)
                )
                status = "diverged" if bad else "complete"
                for epoch in range(1, epochs + 1):
                    results.append(
                        {
                            **ids,
                            "epoch": epoch,
                            "train_loss": NAN if bad else 1.0 / epoch,
                            "train_error": final + 0.2 * (epochs - epoch) / epochs,
                            "test_loss": NAN if bad else 1.0,
                            "test_error": final + 0.02,
                            "lr": 0.1,
                            "seconds": 1.0,
                            "images_per_s": 1000.0,
                            "status": status,
                        }
                    )
                runs.append(
                    {
                        **ids,
                        "status": status,
                        "epochs": epochs,
                        "final_train_error": final,
                        "final_test_error": final + 0.02,
                        "best_test_error": final + 0.01,
                        "images_per_s": 1000.0,
                        "train_s": 3.0,
                        "wall_s": 3.5,
                        "device": device,
                        "threads": 1,
                        "replicas": 1,
                        "precision": "fp32",
                    }
                )
                for block in range(blocks):
                    probes.append(
                        {
                            **ids,
                            "block": block,
                            "stage": block + 1,
                            "response_std": NAN if bad else 1.0 + 0.1 * block,
                            "response_mean": 0.0,
                            "input_grad_norm": math.inf if bad else 0.1,
                            "param_grad_norm": NAN if bad else 0.2,
                            "input_norm": 1.0,
                            "probe_loss": NAN if bad else 0.5,
                        }
                    )
    run.write_table(pd.DataFrame(results), "results")
    run.write_table(pd.DataFrame(probes), "probes")
    run.write_table(pd.DataFrame(runs), "runs")
    run.finish("complete")
    return run


def set_meta_field(run: RunDir, **changes) -> None:
    meta = json.loads(run.meta_path.read_text())
    meta.update(changes)
    run.meta_path.write_text(json.dumps(meta))


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` and its bytes."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(Path(folder).rglob("*"))
        if p.is_file()
    }
