"""The shared vocabulary of "fit the residual" models.

Both backends build a model as a running state plus a sequence of stages, each
of which adds a correction to that state:

* gradient boosting (Friedman 2001, Algorithm 1): the state is the raw
  prediction, ``F_m(x) = F_{m-1}(x) + lr * h_m(x)``, with ``F_0`` the loss's
  initial estimate;
* residual networks (He et al. 2015, eq. 1): the state is the feature map,
  ``x_{l+1} = act(shortcut(x_l) + F_l(x_l))``; the stage's *base* is the
  shortcut path and its *correction* is the residual function ``F_l``.

A backend implements two methods, :meth:`Stagewise._initial_state` and
:meth:`Stagewise._stage_step`, and may convert its input once with
:meth:`Stagewise._prepare` (the booster validates and bins ``X`` there; a net moves it
to its device), so a pass over every stage converts nothing again. Everything else --
staged states, per-stage
contribution sizes, and the lesion of a single stage (Veit et al. 2016,
"Residual networks behave like ensembles of relatively shallow networks") -- is
written once, here.

States may be numpy arrays or torch tensors; this module never imports torch.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

__all__ = ["StageStep", "Stagewise", "contribution_table"]


@dataclass(frozen=True)
class StageStep:
    """What one stage did to the running state.

    Attributes
    ----------
    base : array or tensor
        What the state would be carried forward as without this stage's
        correction (boosting: ``F_{m-1}``; ResNet: ``shortcut(x_l)``, or zeros
        in a plain block, which has no identity path).
    correction : array or tensor
        The stage's additive correction (boosting: ``lr * h_m(x)``; ResNet:
        ``F_l(x_l)``, the residual branch after its last BN).
    state : array or tensor
        The new state (boosting: ``F_m``; ResNet: ``x_{l+1}``).
    """

    base: Any
    correction: Any
    state: Any


def _copy(a: Any) -> Any:
    if hasattr(a, "detach"):  # torch tensor: detach, so no graph is kept alive
        return a.detach().clone()
    return np.array(a, copy=True)


def _fro_norm(a: Any) -> float:
    if hasattr(a, "detach"):
        return float(a.detach().double().norm())
    return float(np.linalg.norm(np.asarray(a, dtype=np.float64).ravel()))


class Stagewise(abc.ABC):
    """A model that is a running state plus a sequence of additive stages."""

    @property
    @abc.abstractmethod
    def n_stages_(self) -> int:
        """Number of fitted stages."""

    def _prepare(self, X: Any) -> Any:
        """``X`` converted once for every stage (validated, binned, moved to a device...).

        Whatever it returns is what :meth:`_initial_state` and :meth:`_stage_step` are given.
        The default returns ``X`` unchanged.
        """
        return X

    @abc.abstractmethod
    def _initial_state(self, P: Any) -> Any:
        """State before the first stage, from the prepared input ``P`` (boosting: ``F_0(X)``;
        ResNet: the stem's output)."""

    @abc.abstractmethod
    def _stage_step(self, m: int, state: Any, P: Any, *, drop: bool = False) -> StageStep:
        """Apply stage ``m`` (0-based) to ``state``; ``P`` is the prepared input.

        With ``drop=True`` the stage's correction is left out: the new state is
        computed from the base alone (the lesion of Veit et al. 2016).
        """

    # ------------------------------------------------------------------ derived
    def staged_steps(self, X: Any, *, drop: int | None = None) -> Iterator[StageStep]:
        """Yield a :class:`StageStep` per stage, in order (copies, safe to keep)."""
        P = self._prepare(X)
        state = self._initial_state(P)
        for m in range(self.n_stages_):
            step = self._stage_step(m, state, P, drop=(m == drop))
            state = step.state
            yield StageStep(_copy(step.base), _copy(step.correction), _copy(step.state))

    def staged_states(self, X: Any) -> Iterator[Any]:
        """Yield the state after each stage, ``state_1 .. state_M`` (copies)."""
        P = self._prepare(X)
        state = self._initial_state(P)
        for m in range(self.n_stages_):
            state = self._stage_step(m, state, P).state
            yield _copy(state)

    def final_state(self, X: Any, *, drop: int | None = None) -> Any:
        """The state after the last stage; with ``drop=m``, with stage ``m`` lesioned."""
        if drop is not None and not 0 <= drop < self.n_stages_:
            raise ValueError(f"drop={drop} is not a stage index; valid: 0..{self.n_stages_ - 1}")
        P = self._prepare(X)
        state = self._initial_state(P)
        for m in range(self.n_stages_):
            state = self._stage_step(m, state, P, drop=(m == drop)).state
        return state

    def stage_contributions(self, X: Any) -> np.ndarray:
        """Relative size of each stage's correction, ``||correction_m|| / ||base_m||``.

        Returns
        -------
        ratios : ndarray of shape (n_stages,)
            Frobenius norms over the whole batch ``X``. ``inf`` where the base is
            exactly zero (e.g. the first boosting stage on a zero-initialised
            model, or a block without an identity path).
        """
        return contribution_table(self, X)["ratio"].to_numpy()

    def drop_stage(self, X: Any, m: int) -> Any:
        """Output state with stage ``m`` removed (its correction skipped)."""
        return self.final_state(X, drop=m)


def contribution_table(model: Stagewise, X: Any):
    """Tidy table of per-stage sizes: one row per stage.

    Columns: ``stage`` (0-based), ``correction_norm``, ``base_norm``, ``ratio``.
    """
    import pandas as pd

    rows = []
    P = model._prepare(X)
    state = model._initial_state(P)
    for m in range(model.n_stages_):
        step = model._stage_step(m, state, P)
        state = step.state
        c, b = _fro_norm(step.correction), _fro_norm(step.base)
        rows.append({"stage": m, "correction_norm": c, "base_norm": b,
                     "ratio": c / b if b > 0 else float("inf")})
    return pd.DataFrame(rows, columns=["stage", "correction_norm", "base_norm", "ratio"])
