"""What ``bench ensemble`` measures on a trained model, through ``Stagewise`` only.

Every measurement is a *lesion*: a set of stages deleted at test time
(:meth:`residuals.core.Stagewise.lesioned_states`). One plan of lesions per model:

* ``dropped = 0``: nothing deleted, the model as trained;
* ``dropped = 1``: each stage alone (Veit et al. 2016, Fig. 3), ``stage`` = its index;
* ``dropped = k >= 2``: ``draws`` sets of ``k`` stages drawn uniformly at random
  (Fig. 5a), ``draw`` = the draw's index; where there are no more distinct sets
  than draws (``C(M, k) <= draws``) every set is measured once instead;
* the *staged* curve: the first ``j`` stages kept and the rest deleted, for
  ``j = 0 .. M``. For a booster that is exactly its staged prediction ``F_j``;
  for a net, the net truncated after ``j`` blocks (each later block bypassed).

``k`` and ``j`` run over every value when the model has fewer than ``points``
stages, else over ``points`` values spread evenly from 0 to ``M``. Errors are
counted over the whole test split, in batches; stage contributions
(``||correction|| / ||base||``) are measured on its first ``probe_images`` images.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from residuals.core import contribution_table

__all__ = ["LESION_COLUMNS", "Lesion", "lesion_counts", "lesion_plan", "measure"]

#: lesions.csv, in this order (one row per measurement)
LESION_COLUMNS = ["model", "family", "seed", "dropped", "stage", "draw", "test_error"]


@dataclass(frozen=True)
class Lesion:
    kind: str  # "lesion" (lesions.csv) or "staged" (staged.csv)
    dropped: tuple[int, ...]  # the deleted stages, sorted
    stage: int | None = None  # dropped == 1: the stage
    draw: int | None = None  # dropped >= 2: the draw
    kept: int | None = None  # staged: stages kept (the first ``kept``)


def lesion_counts(n_stages: int, points: int) -> list[int]:
    """``0 .. n_stages`` when there are at most ``points`` values, else ``points`` spread evenly."""
    if n_stages + 1 <= points:
        return list(range(n_stages + 1))
    return sorted({round(v) for v in np.linspace(0, n_stages, points)})


def lesion_plan(n_stages: int, *, draws: int, points: int, seed: int, family: str) -> list[Lesion]:
    """Every lesion measured on one model (see the module docstring); seeded by
    ``(seed, family, k)``, so a model's draws do not change with the other families."""
    plan = [Lesion("lesion", ())]
    plan += [Lesion("lesion", (m,), stage=m) for m in range(n_stages)]
    for k in lesion_counts(n_stages, points):
        if k < 2:
            continue
        if math.comb(n_stages, k) <= draws:
            sets = [tuple(c) for c in combinations(range(n_stages), k)]
        else:
            rng = np.random.default_rng([seed, zlib.crc32(family.encode()), k])
            sets = [
                tuple(sorted(rng.choice(n_stages, size=k, replace=False).tolist()))
                for _ in range(draws)
            ]
        plan += [Lesion("lesion", s, draw=d) for d, s in enumerate(sets)]
    plan += [
        Lesion("staged", tuple(range(j, n_stages)), kept=j) for j in lesion_counts(n_stages, points)
    ]
    return plan


def _wrong(pred: Any, y_np: np.ndarray, y_t: Any) -> Any:
    """Misclassified count, kept on ``pred``'s device (a torch tensor stays unsynchronised)."""
    if hasattr(pred, "detach"):
        return (pred != y_t).sum()
    return int(np.count_nonzero(np.asarray(pred) != y_np))


def measure(
    fitted,
    data,
    *,
    draws: int,
    points: int,
    seed: int,
    family: str,
    batch_size: int,
    probe_images: int,
) -> dict[str, pd.DataFrame]:
    """Lesions, staged errors and stage contributions of one trained model.

    Returns tidy frames ``lesions`` (:data:`LESION_COLUMNS`), ``staged`` (``model,
    family, seed, kept, n_stages, curve, test_error``) and ``contributions``
    (``model, family, seed, stage, changes_shape, correction_norm, base_norm, ratio``).
    """
    model, name = fitted.model, fitted.name
    n_stages = model.n_stages_
    plan = lesion_plan(n_stages, draws=draws, points=points, seed=seed, family=family)
    drops = [lesion.dropped for lesion in plan]
    x_all, y_all = data.test_x, data.test_y
    n = len(y_all)
    wrong: list[Any] = [0] * len(plan)
    for start in range(0, n, batch_size):
        xb = fitted.inputs(x_all[start : start + batch_size])
        yb = y_all[start : start + batch_size]
        yb_np = yb.cpu().numpy()
        for i, pred in enumerate(model.lesion_predictions(xb, drops)):
            wrong[i] = wrong[i] + _wrong(pred, yb_np, yb)
    errors = [float(w) / n for w in _host(wrong)]

    ids = {"model": name, "family": family, "seed": seed}
    lesions = pd.DataFrame(
        [
            {
                **ids,
                "dropped": len(les.dropped),
                "stage": les.stage,
                "draw": les.draw,
                "test_error": err,
            }
            for les, err in zip(plan, errors)
            if les.kind == "lesion"
        ],
        columns=LESION_COLUMNS,
    )
    for col in ("stage", "draw"):
        lesions[col] = lesions[col].astype("Int64")
    staged = [
        {**ids, "kept": les.kept, "n_stages": n_stages, "curve": "truncated", "test_error": err}
        for les, err in zip(plan, errors)
        if les.kind == "staged"
    ]
    staged += [
        {**ids, "kept": kept, "n_stages": n_stages, "curve": "training", "test_error": err}
        for kept, err in fitted.curve
    ]
    probe = fitted.inputs(x_all[:probe_images])
    contributions = contribution_table(model, probe)
    contributions.insert(0, "changes_shape", list(fitted.changes_shape) or [False] * n_stages)
    contributions = contributions[
        ["stage", "changes_shape", "correction_norm", "base_norm", "ratio"]
    ]
    for key, value in reversed(ids.items()):
        contributions.insert(0, key, value)
    return {"lesions": lesions, "staged": pd.DataFrame(staged), "contributions": contributions}


def _host(values: list[Any]) -> list[float]:
    """Counts as floats, with one device synchronisation for all the tensors among them."""
    tensors = [i for i, v in enumerate(values) if hasattr(v, "detach")]
    out = [0.0 if hasattr(v, "detach") else float(v) for v in values]
    if tensors:
        import torch

        got = torch.stack([values[i].double() for i in tensors]).tolist()
        for i, v in zip(tensors, got):
            out[i] = v
    return out
