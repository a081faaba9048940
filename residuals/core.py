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
:meth:`Stagewise._stage_step` (and :meth:`Stagewise._predict_state` to be scored),
and may convert its input once with :meth:`Stagewise._prepare` (the booster
validates and bins ``X`` there; a net moves it to its device), so a pass over
every stage converts nothing again. Everything else -- staged states, per-stage
contribution sizes, and lesions of any set of stages (Veit et al. 2016,
"Residual networks behave like ensembles of relatively shallow networks") -- is
written once, here.

A *lesion* deletes a set ``D`` of stages at test time: every stage in ``D``
is applied with ``drop=True`` (its correction left out), the others as
trained. :meth:`Stagewise.lesioned_states` evaluates many lesions in one
pass: the states before each stage are computed once and every lesion starts
from the state before its first deleted stage. Where a stage's correction
does not read the running state (boosting: ``h_m(X)`` reads only ``X``; set
``stages_read_state = False``), a lesion is the full state minus the deleted
corrections, so any number of lesions costs one pass over the stages.

States may be numpy arrays or torch tensors; this module never imports torch.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

__all__ = ["StageStep", "Stagewise", "contribution_table"]

#: What a lesion may be given: one stage index, or a collection of them.
Drop = int | Iterable[int] | None


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

    #: Whether stage ``m``'s correction depends on the running state (ResNet: ``F_l(x_l)``).
    #: ``False`` (boosting: ``lr * h_m(X)``) promises that ``_stage_step(m, state, P)`` has
    #: ``state + correction`` as its new state and ``state`` when dropped, with a correction
    #: that reads only the input: lesions are then sums of corrections.
    stages_read_state: ClassVar[bool] = True

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

    def _drop_step(self, m: int, state: Any, P: Any) -> Any:
        """The state after stage ``m`` when it is deleted. Backends may override this to
        skip computing the correction that ``_stage_step(..., drop=True)`` returns."""
        return self._stage_step(m, state, P, drop=True).state

    def _predict_state(self, state: Any) -> Any:
        """The model's prediction from a final state (boosting: the decoded raw
        prediction; a ResNet classifier: the head's class index), shape ``(n_samples,)``.

        Needed only to score lesions (:meth:`lesion_predictions`).
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not define _predict_state, so its "
            "lesions can be computed (lesioned_states) but not scored"
        )

    # ------------------------------------------------------------------ derived
    def drop_set(self, drop: Drop) -> frozenset[int]:
        """``drop`` (``None``, a stage index or a collection of them) as a validated set."""
        if drop is None:
            return frozenset()
        items: list[Any]
        try:
            items = list(drop)  # type: ignore[arg-type]
        except TypeError:  # one index (or something that is not one: reported below)
            items = [drop]
        n = self.n_stages_
        for m in items:
            if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or not 0 <= m < n:
                raise ValueError(f"drop={m!r} is not a stage index; valid: 0..{n - 1}")
        return frozenset(int(m) for m in items)

    def staged_steps(self, X: Any, *, drop: Drop = None) -> Iterator[StageStep]:
        """Yield a :class:`StageStep` per stage, in order (copies, safe to keep);
        the stages in ``drop`` are lesioned."""
        dropped = self.drop_set(drop)
        P = self._prepare(X)
        state = self._initial_state(P)
        for m in range(self.n_stages_):
            step = self._stage_step(m, state, P, drop=m in dropped)
            state = step.state
            yield StageStep(_copy(step.base), _copy(step.correction), _copy(step.state))

    def staged_states(self, X: Any) -> Iterator[Any]:
        """Yield the state after each stage, ``state_1 .. state_M`` (copies)."""
        P = self._prepare(X)
        state = self._initial_state(P)
        for m in range(self.n_stages_):
            state = self._stage_step(m, state, P).state
            yield _copy(state)

    def final_state(self, X: Any, *, drop: Drop = None) -> Any:
        """The state after the last stage; with ``drop`` (a stage index or a collection of
        them), with those stages lesioned."""
        dropped = self.drop_set(drop)
        P = self._prepare(X)
        state = self._initial_state(P)
        for m in range(self.n_stages_):
            state = self._stage_step(m, state, P, drop=m in dropped).state
        return state

    def lesioned_states(self, X: Any, drops: Iterable[Drop]) -> Iterator[Any]:
        """The final state under each lesion in ``drops``, in order (one per item).

        Equal to ``final_state(X, drop=d) for d in drops`` but sharing the work: ``X`` is
        prepared once, the states before every stage are computed once (``n_stages_ + 1``
        states of ``X`` are kept, so pass ``X`` in batches) and each lesion runs only from
        its first deleted stage. With ``stages_read_state = False`` each lesion is the
        full state minus the deleted corrections (subtracted in stage order).
        """
        sets = [self.drop_set(d) for d in drops]
        n = self.n_stages_
        P = self._prepare(X)
        state = self._initial_state(P)
        if not self.stages_read_state:
            corrections = []
            for m in range(n):
                step = self._stage_step(m, state, P)
                corrections.append(step.correction)
                state = step.state
            for dropped in sets:
                lesioned = _copy(state)
                for m in sorted(dropped):
                    lesioned = lesioned - corrections[m]
                yield lesioned
            return
        before = [state]  # before[m]: the state entering stage m; before[n]: the final state
        for m in range(n):
            state = self._stage_step(m, state, P).state
            before.append(state)
        for dropped in sets:
            first = min(dropped, default=n)
            state = before[first]
            for m in range(first, n):
                state = (
                    self._drop_step(m, state, P)
                    if m in dropped
                    else self._stage_step(m, state, P).state
                )
            yield _copy(state) if first == n else state

    def lesion_predictions(self, X: Any, drops: Iterable[Drop]) -> Iterator[Any]:
        """The model's prediction (:meth:`_predict_state`) under each lesion in ``drops``."""
        for state in self.lesioned_states(X, drops):
            yield self._predict_state(state)

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

    def drop_stages(self, X: Any, stages: Iterable[int]) -> Any:
        """Output state with every stage in ``stages`` removed."""
        return self.final_state(X, drop=stages)


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
        rows.append(
            {
                "stage": m,
                "correction_norm": c,
                "base_norm": b,
                "ratio": c / b if b > 0 else float("inf"),
            }
        )
    return pd.DataFrame(rows, columns=["stage", "correction_norm", "base_norm", "ratio"])
