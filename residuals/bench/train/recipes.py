"""Recipes: everything ``residuals train`` needs to train one net, by name.

A :class:`Recipe` is the net (a registry name and its builder options), the data
(a dataset and an optional resize) and the training (a :class:`~residuals.train.TrainConfig`).
The named recipes reproduce what the two articles this project grew from set
(``docs/recipes.md`` puts their figures beside ours):

* ``default``: ResNet-20 on the embedded digits with the degradation bench's recipe
  (SGD, momentum 0.9, weight decay 1e-4, batch 128, lr 0.05, a 2-epoch linear warm-up
  then cosine, 12 epochs), so that ``residuals train`` trains what the bench trains;
* ``d2l-resnet18``: Dive into Deep Learning, Sec. 8.6 (seed 001): its ResNet-18 on
  Fashion-MNIST resized to 96x96, ``lr, num_epochs, batch_size = 0.05, 10, 256`` with
  ``train_ch6``'s plain SGD (no momentum, no weight decay, a constant rate) and
  Xavier initialisation (the net's own, see ``d2l-resnet18`` in :mod:`residuals.nets`);
* ``tf-preact-elu``: the TensorFlow article (seed 000): its BN-ELU pre-activation net
  trained with Adam on softmax cross-entropy. The article leaves its learning rate,
  batch size, data and length in a config file it does not show: we use TensorFlow's
  Adam defaults (lr 1e-3, beta1 0.9), batch 128, Fashion-MNIST, 10 epochs.

Options given on the command line override a recipe field by field
(:meth:`Recipe.with_options`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from residuals.bench.degradation.config import DEFAULT_PRESET, PRESETS
from residuals.train import TrainConfig

__all__ = [
    "ARTICLE_FIGURES",
    "DEFAULT_RECIPE",
    "RECIPES",
    "Recipe",
    "get_recipe",
    "parse_warmup",
]

#: Recipe fields that are not the trainer's (the rest are :class:`TrainConfig` fields).
NET_DATA_FIELDS = ("model", "dataset", "resize", "subset", "activation", "head")
#: The only change a resume accepts: more epochs (the schedule is re-planned, see the trainer).
RESUMABLE_CHANGES = ("epochs",)


@dataclass(frozen=True)
class Recipe:
    """One net, one dataset, one way of training it.

    Attributes
    ----------
    model : a registered model name (``residuals train --list-models``).
    dataset : ``digits``, ``fashion-mnist`` or ``cifar10``.
    resize : square side the images are resized to before training (bilinear); None keeps them.
    subset : train on the first ``subset`` training images only (a quick trial; the test set
        stays whole); None: all of them.
    activation, head : builder options of the net (None: the model's own).
    train : how to train it.
    name : the recipe's name (``"custom"`` when built from options alone).
    """

    model: str = "resnet20"
    dataset: str = "digits"
    resize: int | None = None
    subset: int | None = None
    activation: str | None = None
    head: str | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    name: str = "custom"

    def __post_init__(self) -> None:
        if self.resize is not None and (
            isinstance(self.resize, bool) or not isinstance(self.resize, int) or self.resize < 1
        ):
            raise ValueError(f"resize must be a positive number of pixels, got {self.resize!r}")
        if self.subset is not None and (
            isinstance(self.subset, bool) or not isinstance(self.subset, int) or self.subset < 2
        ):
            raise ValueError(f"subset must be a number of images >= 2, got {self.subset!r}")
        if isinstance(self.train, dict):  # from JSON
            object.__setattr__(self, "train", TrainConfig(**self.train))

    def model_options(self) -> dict[str, Any]:
        """Builder keyword arguments the recipe sets (``activation``, ``head``)."""
        return {k: getattr(self, k) for k in ("activation", "head") if getattr(self, k) is not None}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recipe:
        """Inverse of :meth:`to_dict` (a run's meta.json ``config``); unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"not a training recipe: unknown keys {unknown}")
        train = d.get("train") or {}
        known_train = {f.name for f in fields(TrainConfig)}
        unknown = sorted(set(train) - known_train)
        if unknown:
            raise ValueError(f"not a training recipe: unknown training keys {unknown}")
        return cls(**{**d, "train": TrainConfig(**train)})

    def with_options(self, **options: Any) -> Recipe:
        """This recipe with the given fields changed (None values are ignored).

        ``options`` are recipe fields (``model``, ``dataset``, ``resize``, ``activation``,
        ``head``, ``name``) or :class:`TrainConfig` fields. A linear warm-up keeps its share
        of training when only ``epochs`` changes (the degradation bench's rule: 2 of 12
        epochs stays a sixth). Raises ``ValueError`` for an invalid combination.
        """
        options = {k: v for k, v in options.items() if v is not None}
        own = {k: options.pop(k) for k in list(options) if k in NET_DATA_FIELDS + ("name",)}
        unknown = sorted(set(options) - {f.name for f in fields(TrainConfig)})
        if unknown:
            raise ValueError(f"unknown recipe options {unknown}")
        cfg = self.train
        if (
            ("epochs" in options and "warmup_epochs" not in options and "warmup" not in options)
            and cfg.warmup == "linear"
            and cfg.warmup_epochs > 0
        ):
            options["warmup_epochs"] = cfg.warmup_epochs / cfg.epochs * options["epochs"]
        return dataclasses.replace(self, train=dataclasses.replace(cfg, **options), **own)

    def differences(self, other: Recipe, *, ignore: tuple[str, ...] = ()) -> list[str]:
        """``"field: A in this recipe, B in the other"`` for every field that differs."""
        mine, theirs = _flat(self), _flat(other)
        return [
            f"{k}: {mine[k]!r} -> {theirs[k]!r}"
            for k in mine
            if k not in ignore and k != "name" and mine[k] != theirs[k]
        ]


def _flat(recipe: Recipe) -> dict[str, Any]:
    d = recipe.to_dict()
    train = d.pop("train")
    return {**d, **train}


def parse_warmup(value: str | float | None) -> dict[str, Any]:
    """``--warmup`` as TrainConfig fields: a number of epochs of linear warm-up (0: none), or
    ``paper`` (He et al.'s lr/10 until training error < 80%)."""
    if value is None:
        return {}
    if isinstance(value, str) and value.strip().lower() in ("paper", "none"):
        return {"warmup": value.strip().lower(), "warmup_epochs": 0.0}
    try:
        epochs = float(value)
    except ValueError:
        raise ValueError(
            f"warmup must be a number of epochs (e.g. 2, or 0 for none) or 'paper', got {value!r}"
        ) from None
    if not math.isfinite(epochs) or epochs < 0:
        raise ValueError(f"warmup must be a number of epochs >= 0, got {value!r}")
    return {"warmup": "linear" if epochs > 0 else "none", "warmup_epochs": epochs}


DEFAULT_RECIPE = "default"

RECIPES: dict[str, Recipe] = {
    # the degradation bench's recipe (its default preset, "digits"): the same object
    "default": Recipe(name="default", train=PRESETS[DEFAULT_PRESET].train),
    # d2l, Sec. 8.6: lr, num_epochs, batch_size = 0.05, 10, 256;
    # load_data_fashion_mnist(batch_size, resize=96); train_ch6: torch.optim.SGD(lr) on
    # CrossEntropyLoss, Xavier-uniform weights; no augmentation
    "d2l-resnet18": Recipe(
        name="d2l-resnet18",
        model="d2l-resnet18",
        dataset="fashion-mnist",
        resize=96,
        train=TrainConfig(
            epochs=10,
            batch_size=256,
            lr=0.05,
            momentum=0.0,
            weight_decay=0.0,
            schedule="constant",
            warmup="none",
            warmup_epochs=0.0,
            augment=False,
        ),
    ),
    # seed 000: resnet(X, 3, 64, C, 5); tf.train.AdamOptimizer(config.lr) on
    # softmax_cross_entropy_with_logits; its lr and batch size are TensorFlow's defaults here
    "tf-preact-elu": Recipe(
        name="tf-preact-elu",
        model="tf-preact-elu",
        dataset="fashion-mnist",
        train=TrainConfig(
            epochs=10,
            batch_size=128,
            optimizer="adam",
            lr=1e-3,
            momentum=0.9,
            weight_decay=0.0,
            schedule="constant",
            warmup="none",
            warmup_epochs=0.0,
            augment=False,
        ),
    ),
}


#: What the articles report for their own runs of a recipe (seed 001's last lines:
#: "loss 0.012, train acc 0.997, test acc 0.893 / 5032.7 examples/sec on cuda:0").
#: Seed 000 reports no figures.
ARTICLE_FIGURES: dict[str, dict[str, float]] = {
    "d2l-resnet18": {
        "epochs": 10,
        "loss": 0.012,
        "train_acc": 0.997,
        "test_acc": 0.893,
        "images_per_s": 5032.7,
    },
}


def get_recipe(name: str) -> Recipe:
    """The named recipe; ``ValueError`` listing the names otherwise."""
    try:
        return RECIPES[name]
    except KeyError:
        import difflib

        close = [n for n in RECIPES if n.startswith(str(name))] or difflib.get_close_matches(
            str(name), RECIPES, n=2
        )
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"unknown recipe {name!r}.{hint} Known: {', '.join(RECIPES)}") from None
