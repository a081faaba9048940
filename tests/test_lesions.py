"""Lesions of any set of stages (residuals.core.Stagewise), on every backend."""

import numpy as np
import pytest
import torch

from residuals.boosting import BoostingClassifier
from residuals.core import StageStep, Stagewise
from residuals.nets import cifar_resnet


class Additive(Stagewise):
    """state_0 = sum(X); stage m adds c[m] * X[:, 0] (it reads only X); predicts sign."""

    def __init__(self, c, reads_state=True):
        self.c = np.asarray(c, dtype=float)
        self.stages_read_state = reads_state

    @property
    def n_stages_(self):
        return len(self.c)

    def _initial_state(self, X):
        return X.sum(axis=1, keepdims=True)

    def _stage_step(self, m, state, X, *, drop=False):
        corr = self.c[m] * X[:, :1]
        return StageStep(base=state, correction=corr, state=state if drop else state + corr)

    def _predict_state(self, state):
        return (state[:, 0] > 0).astype(int)


X = np.array([[1.0, 2.0], [3.0, -1.0], [-2.0, 0.5]])
DROPS = [(), 1, (0, 2), {1, 2, 3}, range(4), np.array([3])]


@pytest.mark.parametrize("reads_state", [True, False])
def test_lesioned_states_equal_final_state_with_each_drop_set(reads_state):
    model = Additive([1.0, 0.5, -2.0, 0.25], reads_state=reads_state)
    got = list(model.lesioned_states(X, DROPS))
    assert len(got) == len(DROPS)
    for drop, state in zip(DROPS, got):
        expected = model.final_state(X, drop=drop)
        kept = [m for m in range(4) if m not in model.drop_set(drop)]
        np.testing.assert_allclose(
            expected, X.sum(1, keepdims=True) + sum(model.c[m] * X[:, :1] for m in kept)
        )
        np.testing.assert_allclose(state, expected)
    got[0][:] = 99  # a yielded state is the caller's to keep or change
    np.testing.assert_allclose(next(model.lesioned_states(X, [()])), model.final_state(X))


def test_drop_stages_and_predictions():
    model = Additive([1.0, -10.0])
    np.testing.assert_allclose(model.drop_stages(X, [1]), model.drop_stage(X, 1))
    preds = list(model.lesion_predictions(X, [(), (1,)]))
    np.testing.assert_array_equal(preds[0], model._predict_state(model.final_state(X)))
    np.testing.assert_array_equal(preds[1], (X.sum(1) + X[:, 0] > 0).astype(int))


@pytest.mark.parametrize("bad", [4, -1, (0, 7), [True], 1.0, ("0",)])
def test_drop_sets_are_validated(bad):
    model = Additive([1.0, 0.5, -2.0, 0.25])
    with pytest.raises(ValueError, match="is not a stage index; valid: 0..3"):
        model.final_state(X, drop=bad)
    with pytest.raises(ValueError, match="is not a stage index"):
        list(model.lesioned_states(X, [(), bad]))


def test_a_model_without_predict_state_says_so():
    class NoPredict(Additive):
        _predict_state = Stagewise._predict_state

    with pytest.raises(NotImplementedError, match="NoPredict does not define _predict_state"):
        list(NoPredict([1.0]).lesion_predictions(X, [()]))


# ---------------------------------------------------------------------- ResNet
@pytest.mark.parametrize("skip", [True, False])
def test_resnet_lesions_share_work_and_match_final_state(skip):
    torch.manual_seed(0)
    model = cifar_resnet(14, skip=skip, in_channels=1).eval()  # 6 blocks, 2 change shape
    x = torch.randn(5, 1, 8, 8)
    drops = [(), (0,), (2,), (1, 4), tuple(range(6)), (5,)]
    for drop, state in zip(drops, model.lesioned_states(x, drops)):
        torch.testing.assert_close(state, model.final_state(x, drop=drop))
    preds = list(model.lesion_predictions(x, drops))
    with torch.no_grad():
        torch.testing.assert_close(preds[0], model(x).argmax(1))


def test_a_deleted_plain_block_passes_its_input_on():
    """Veit et al. delete a VGG layer: the next layer gets the deleted one's input. Where
    the block changes shape, the parameter-free option-A map stands in."""
    torch.manual_seed(0)
    model = cifar_resnet(14, skip=False, in_channels=1).eval()
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        h = model.stem(x)
        for i, block in enumerate(model.blocks):
            if i == 1:  # same shape: skipped
                continue
            if i == 2:  # 16 -> 32 channels, stride 2: subsample, zero channels
                h = torch.cat(
                    [torch.zeros(3, 8, 4, 4), h[:, :, ::2, ::2], torch.zeros(3, 8, 4, 4)], 1
                )
                continue
            h = block(h)
    torch.testing.assert_close(model.drop_stages(x, [1, 2]), h)


def test_a_deleted_residual_block_keeps_its_shortcut():
    torch.manual_seed(0)
    model = cifar_resnet(14, in_channels=1).eval()
    x = torch.randn(3, 1, 8, 8)
    states = [s for s in model.staged_states(x)]
    block = model.blocks[2]  # downsampling: option A shortcut
    torch.testing.assert_close(block.bypass(states[1]), torch.relu(block.shortcut(states[1])))
    dropped = list(model.staged_steps(x, drop={2}))[2]
    torch.testing.assert_close(dropped.state, block.bypass(states[1]))


# ---------------------------------------------------------------------- booster
@pytest.fixture(scope="module")
def booster():
    from sklearn.datasets import load_digits

    Xd, yd = load_digits(return_X_y=True)
    est = BoostingClassifier(tree_method="hist", n_estimators=12, max_depth=2, random_state=0).fit(
        Xd[:600], yd[:600]
    )
    return est, Xd[600:800]


def test_booster_lesions_are_sums_of_corrections(booster):
    est, Xt = booster
    assert est.stages_read_state is False
    drops = [(), (3,), (0, 5, 11), tuple(range(12))]
    for drop, state in zip(drops, est.lesioned_states(Xt, drops)):
        np.testing.assert_allclose(state, est.final_state(Xt, drop=drop), rtol=1e-12, atol=1e-12)
    # deleting every stage after the j-th is the booster's staged prediction F_j
    truncations = [tuple(range(j, 12)) for j in range(1, 13)]
    for staged, state in zip(
        est.staged_decision_function(Xt), est.lesioned_states(Xt, truncations)
    ):
        np.testing.assert_allclose(state, staged, rtol=1e-12, atol=1e-12)
    preds = list(est.lesion_predictions(Xt, [()]))
    np.testing.assert_array_equal(preds[0], est.predict(Xt))
