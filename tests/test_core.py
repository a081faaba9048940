"""The shared stagewise vocabulary, on a model small enough to check by hand."""

import numpy as np
import pytest

from residuals.core import StageStep, Stagewise, contribution_table


class Additive(Stagewise):
    """state_0 = X @ w0; stage m adds X * c[m] (elementwise), a toy booster."""

    def __init__(self, c):
        self.c = np.asarray(c, dtype=float)

    @property
    def n_stages_(self):
        return len(self.c)

    def _initial_state(self, X):
        return X.sum(axis=1, keepdims=True)

    def _stage_step(self, m, state, X, *, drop=False):
        corr = self.c[m] * X[:, :1]
        new = state if drop else state + corr
        return StageStep(base=state, correction=corr, state=new)


X = np.array([[1.0, 2.0], [3.0, -1.0]])


def test_staged_states_are_running_sums_and_copies():
    model = Additive([1.0, 0.5, -2.0])
    states = list(model.staged_states(X))
    assert len(states) == 3
    expected = X.sum(1, keepdims=True) + np.cumsum([1.0, 0.5, -2.0])[:, None, None] * X[:, :1]
    for got, want in zip(states, expected):
        np.testing.assert_array_equal(got, want)
    states[0][:] = 99  # a yielded state is a copy: mutating it changes nothing else
    np.testing.assert_array_equal(list(model.staged_states(X))[0], expected[0])
    np.testing.assert_array_equal(model.final_state(X), expected[-1])


def test_drop_stage_removes_exactly_that_correction():
    model = Additive([1.0, 0.5, -2.0])
    full = model.final_state(X)
    for m, c in enumerate(model.c):
        np.testing.assert_array_equal(model.drop_stage(X, m), full - c * X[:, :1])
    with pytest.raises(ValueError, match="valid: 0..2"):
        model.drop_stage(X, 3)


def test_contributions_are_relative_norms():
    model = Additive([1.0, 0.5])
    table = contribution_table(model, X)
    assert list(table.columns) == ["stage", "correction_norm", "base_norm", "ratio"]
    base0 = np.linalg.norm(X.sum(1))
    corr0 = np.linalg.norm(X[:, 0])
    assert table.loc[0, "correction_norm"] == pytest.approx(corr0)
    assert table.loc[0, "base_norm"] == pytest.approx(base0)
    np.testing.assert_allclose(model.stage_contributions(X), table["ratio"].to_numpy())


def test_zero_base_gives_inf_ratio():
    model = Additive([1.0])
    Z = np.array([[1.0, -1.0]])  # initial state sums to zero
    assert np.isinf(model.stage_contributions(Z)[0])


def test_steps_work_with_torch_tensors():
    torch = pytest.importorskip("torch")

    class TorchAdditive(Additive):
        def _initial_state(self, X):
            return X.sum(dim=1, keepdim=True)

    model = TorchAdditive([2.0])
    Xt = torch.tensor(X, requires_grad=True)
    steps = list(model.staged_steps(Xt))
    assert not steps[0].state.requires_grad  # copies are detached
    assert model.stage_contributions(Xt).shape == (1,)
