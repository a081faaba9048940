"""The model families of ``bench ensemble``: how each is trained, as a registry.

A family is a function ``fit(request) -> Fitted``: it trains one model on the
request's data and seed and hands back a :class:`residuals.core.Stagewise`
model together with the map from a batch of the dataset's uint8 images to that
model's input. Everything the bench measures afterwards (lesions, staged
errors, stage contributions) goes through ``Stagewise`` alone, so a new family
is one :func:`register_family` call and no change to the bench::

    register_family("my-model", fit_my_model)    # then: EnsembleConfig(families=(..., "my-model"))

The four built-in families:

* ``booster``: :class:`residuals.boosting.BoostingClassifier` in hist mode
  (multi-class log loss) on the flattened pixels; a stage is one boosting
  iteration, i.e. one tree per class (Friedman 2001, Algorithm 6);
* ``residual``: the CIFAR ResNet of ``depth`` layers (He et al. 2015, option A),
  trained end to end; a stage is a block;
* ``plain``: its plain twin (no identity paths), trained the same way;
* ``stagewise``: the same ResNet trained block by block like a booster
  (:mod:`residuals.train.stagewise`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "BOOSTER_MAX_CELLS",
    "BUILTIN_FAMILIES",
    "CHECKS",
    "FAMILIES",
    "FitRequest",
    "Fitted",
    "check_booster",
    "check_families",
    "family_names",
    "fit_family",
    "register_family",
]


@dataclass
class FitRequest:
    """What a family's fit function gets."""

    config: Any  # the bench's EnsembleConfig
    data: Any  # residuals.data.ImageData, on ``device``
    seed: int
    device: str
    checkpoint_dir: Path  # a folder of this (family, seed) for resumable training
    progress: Callable[[str], None] | None = None  # a line per epoch or stage, if given

    def say(self, line: str) -> None:
        if self.progress is not None:
            self.progress(line)


@dataclass
class Fitted:
    """A trained model, ready to be measured through :class:`residuals.core.Stagewise`."""

    model: Any  # a Stagewise model with _predict_state
    inputs: Callable[[Any], Any]  # uint8 images (N, C, H, W) -> the model's X
    name: str  # e.g. "resnet-20", "booster-100x10"
    stage_label: str = "stage"  # what a stage is: "block", "iteration"
    changes_shape: tuple[bool, ...] = ()  # per stage: does it change the state's shape?
    train_s: float = 0.0  # training time
    train_error: float = float("nan")  # final training error (as training measured it)
    parameters: int = 0  # learned numbers (weights; leaf values and
    #                                              split thresholds of the trees)
    diverged: bool = False
    curve: list[tuple[int, float]] = field(default_factory=list)  # (stages, test error) as
    #                                              training built the model (stagewise only)


FitFunction = Callable[[FitRequest], Fitted]
CheckFunction = Callable[[Any, Any], None]  # (config, data) -> None, or ValueError
FAMILIES: dict[str, FitFunction] = {}
CHECKS: dict[str, CheckFunction] = {}


def register_family(name: str, fit: FitFunction, check: CheckFunction | None = None) -> None:
    """Make ``name`` a family of the bench (replacing one of that name).

    ``check(config, data)``, if given, raises ``ValueError`` (with what to change) when the
    family cannot train on that data; every family's check runs before any training.
    """
    if not isinstance(name, str) or not name or "," in name:
        raise ValueError(f"a family name is a non-empty string without commas, got {name!r}")
    FAMILIES[name] = fit
    CHECKS.pop(name, None)
    if check is not None:
        CHECKS[name] = check


def check_families(names, config, data) -> None:
    """Run the checks of the families ``names`` on ``data`` (``ValueError`` on a problem)."""
    for name in names:
        if name in CHECKS:
            CHECKS[name](config, data)


def family_names() -> tuple[str, ...]:
    return tuple(FAMILIES)


def fit_family(name: str, request: FitRequest) -> Fitted:
    try:
        fit = FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown family {name!r}; choose from {', '.join(FAMILIES)}") from None
    return fit(request)


# --------------------------------------------------------------------------- nets
def _net_inputs(data) -> Callable:
    from residuals.data import normalize

    mean = torch_tensor(data.mean, data)
    std = torch_tensor(data.std, data)
    return lambda x: normalize(x, mean, std)


def torch_tensor(values, data):
    import torch

    return torch.as_tensor(values, dtype=torch.float32, device=data.device)


def _changes_shape(net) -> tuple[bool, ...]:
    return tuple(b.stride != 1 or b.in_ch != b.out_ch for b in net.blocks)


def _build_net(req: FitRequest, *, skip: bool):
    import torch

    from residuals.nets import cifar_resnet

    torch.manual_seed(req.seed)
    return cifar_resnet(
        req.config.depth,
        skip=skip,
        in_channels=req.data.in_channels,
        num_classes=req.data.num_classes,
    )


def _parameters(net) -> int:
    return sum(p.numel() for p in net.parameters())


def _eval_net(net):
    import torch

    return net.eval().float().to(memory_format=torch.contiguous_format)


def _fit_end_to_end(req: FitRequest, *, skip: bool) -> Fitted:
    from residuals.train import train

    net = _build_net(req, skip=skip)
    ckpt = req.checkpoint_dir / "model.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    name = _net_name(req, skip)
    epochs = req.config.epochs

    def on_epoch(r) -> None:
        req.say(
            f"  {name} seed {req.seed} epoch {r.epoch}/{epochs}: train error "
            f"{100 * r.train_error:.1f}%, test error {100 * r.test_error:.1f}%, {r.seconds:.1f} s"
        )

    result = train(
        net,
        req.data,
        req.config.net_train_config(req.seed, req.device),
        checkpoint_path=ckpt,
        resume=ckpt.is_file(),
        on_epoch=on_epoch,
    )
    net = _eval_net(result.model)
    last = result.history[-1]
    return Fitted(
        model=net,
        inputs=_net_inputs(req.data),
        name=_net_name(req, skip),
        stage_label="block",
        changes_shape=_changes_shape(net),
        train_s=sum(r.seconds for r in result.history),
        train_error=last.train_error,
        parameters=_parameters(net),
        diverged=result.diverged,
    )


def _net_name(req: FitRequest, skip: bool) -> str:
    return f"{'resnet' if skip else 'plain'}-{req.config.depth}"


def fit_residual(req: FitRequest) -> Fitted:
    """The CIFAR ResNet of ``config.depth`` layers, trained end to end."""
    return _fit_end_to_end(req, skip=True)


def fit_plain(req: FitRequest) -> Fitted:
    """Its plain twin (no identity paths), trained with the same recipe."""
    return _fit_end_to_end(req, skip=False)


def fit_stagewise(req: FitRequest) -> Fitted:
    """The same ResNet trained one block at a time (:func:`residuals.train.stagewise.train_stagewise`)."""
    from residuals.train.stagewise import train_stagewise

    net = _build_net(req, skip=True)

    def on_stage(r) -> None:
        req.say(
            f"  stagewise-resnet-{req.config.depth} seed {req.seed} block {r.stage + 1}/"
            f"{net.n_stages_}: test error {100 * r.test_error:.1f}%, {r.seconds:.1f} s"
        )

    result = train_stagewise(
        net,
        req.data,
        req.config.stage_train_config(req.seed, req.device),
        checkpoint_dir=req.checkpoint_dir,
        on_stage=on_stage,
    )
    net = _eval_net(result.model)
    curve = [(r.stage + 1, r.test_error) for r in result.stages]
    last = result.stages[-1]
    return Fitted(
        model=net,
        inputs=_net_inputs(req.data),
        name=f"stagewise-resnet-{req.config.depth}",
        stage_label="block",
        changes_shape=_changes_shape(net),
        train_s=result.seconds,
        train_error=last.train_error,
        parameters=_parameters(net),
        diverged=result.diverged,
        curve=curve,
    )


# --------------------------------------------------------------------------- booster
def booster_inputs(x) -> np.ndarray:
    """uint8 images ``(N, C, H, W)`` -> float32 pixels ``(N, C*H*W)`` on the host."""
    return x.reshape(len(x), -1).cpu().numpy().astype(np.float32)


#: Training pixels the booster takes at most (rows x features): its binned copy is one byte
#: each, its float32 input four; CIFAR-10's 50k x 3072 is 154M.
BOOSTER_MAX_CELLS = 400_000_000


def check_booster(cfg, data) -> None:
    """The booster reads flattened pixels with every class in its training split (its
    classes must be the nets' class indices 0..K-1), and a size it can hold in memory."""
    y = data.train_y.cpu().numpy()
    missing = sorted(set(range(data.num_classes)) - set(np.unique(y).tolist()))
    if missing:
        names = ", ".join(repr(data.classes[i]) for i in missing)
        raise ValueError(
            f"the booster cannot take this training split: {len(y)} images of {data.name} "
            f"without class {names}; it fits one tree per class and needs every class "
            "(use a larger --train-size or drop the booster from --families)"
        )
    cells = len(y) * int(np.prod(data.train_x.shape[1:]))
    if cells > BOOSTER_MAX_CELLS:
        raise ValueError(
            f"the booster cannot take {len(y)} images of {tuple(data.train_x.shape[1:])} "
            f"pixels ({cells:,} values, more than {BOOSTER_MAX_CELLS:,}); use --train-size "
            "to train every family on fewer images"
        )


def fit_booster(req: FitRequest) -> Fitted:
    """Hist-mode gradient boosting with multi-class log loss on the flattened pixels."""
    from residuals.boosting import BoostingClassifier

    cfg, data = req.config, req.data
    check_booster(cfg, data)
    X, y = booster_inputs(data.train_x), data.train_y.cpu().numpy()
    est = BoostingClassifier(
        loss="log_loss",
        tree_method="hist",
        n_estimators=cfg.n_estimators,
        learning_rate=cfg.learning_rate,
        max_depth=cfg.max_depth,
        max_bins=cfg.max_bins,
        subsample=cfg.subsample,
        random_state=req.seed,
        device="cuda" if str(req.device).startswith("cuda") else "cpu",
    )
    start = time.perf_counter()
    est.fit(X, y)
    train_s = time.perf_counter() - start
    train_error = float(np.mean(est.predict(X) != y))
    # learned numbers: each tree's leaf values and split thresholds (2 * leaves - 1)
    leaves = sum(2 * len(est._learner.leaves(t)) - 1 for stage in est.estimators_ for t in stage)
    return Fitted(
        model=est,
        inputs=booster_inputs,
        name=f"booster-{cfg.n_estimators}x{est.n_trees_per_iteration_}",
        stage_label="iteration",
        changes_shape=(False,) * est.n_stages_,
        train_s=train_s,
        train_error=train_error,
        parameters=int(leaves),
    )


BUILTIN_FAMILIES: dict[str, FitFunction] = {
    "booster": fit_booster,
    "residual": fit_residual,
    "plain": fit_plain,
    "stagewise": fit_stagewise,
}
FAMILIES.update(BUILTIN_FAMILIES)
CHECKS["booster"] = check_booster
