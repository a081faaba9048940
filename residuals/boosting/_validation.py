"""Parameter constraints with scikit-learn-style messages.

A small, public-API-only stand-in for scikit-learn's private
``_param_validation``: each parameter gets a list of accepted forms, and a bad
value raises :class:`InvalidParameterError` naming the estimator, the
parameter, every accepted form, and the value received::

    The 'learning_rate' parameter of BoostingRegressor must be a float in the
    range [0.0, inf). Got -1 instead.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "COMMON_CONSTRAINTS",
    "HasMethods",
    "Interval",
    "InvalidParameterError",
    "Options",
    "validate_params",
]


class InvalidParameterError(ValueError, TypeError):
    """A constructor parameter has a value or type it does not accept.

    Subclasses both ``ValueError`` and ``TypeError``, like scikit-learn's.
    """


@dataclass(frozen=True)
class Interval:
    """Numbers of a kind (``"int"``, ``"real"``, ``"real_not_int"``) in a range.

    ``closed`` is ``"left"``, ``"right"``, ``"both"`` or ``"neither"``;
    ``None`` bounds are infinite.
    """

    kind: str
    low: float | None
    high: float | None
    closed: str

    def _type_ok(self, v: Any) -> bool:
        if isinstance(v, (bool, np.bool_)):
            return False
        if self.kind == "int":
            return isinstance(v, numbers.Integral)
        if self.kind == "real_not_int":
            return isinstance(v, numbers.Real) and not isinstance(v, numbers.Integral)
        return isinstance(v, numbers.Real)

    def accepts(self, v: Any) -> bool:
        if not self._type_ok(v) or (isinstance(v, float) and math.isnan(v)):
            return False
        lo_ok = (
            self.low is None or v > self.low or (v == self.low and self.closed in ("left", "both"))
        )
        hi_ok = (
            self.high is None
            or v < self.high
            or (v == self.high and self.closed in ("right", "both"))
        )
        return lo_ok and hi_ok

    def __str__(self) -> str:
        noun = "an int" if self.kind == "int" else "a float"
        lb = "[" if self.closed in ("left", "both") and self.low is not None else "("
        rb = "]" if self.closed in ("right", "both") and self.high is not None else ")"
        lo = "-inf" if self.low is None else self.low
        hi = "inf" if self.high is None else self.high
        return f"{noun} in the range {lb}{lo}, {hi}{rb}"


@dataclass(frozen=True)
class Options:
    """One of a fixed set of strings."""

    values: frozenset

    def __init__(self, *values: str):
        object.__setattr__(self, "values", frozenset(values))

    def accepts(self, v: Any) -> bool:
        return isinstance(v, str) and v in self.values

    def __str__(self) -> str:
        return "a str among {" + ", ".join(repr(s) for s in sorted(self.values)) + "}"


@dataclass(frozen=True)
class HasMethods:
    """An object with all of the given methods (an estimator)."""

    methods: tuple

    def accepts(self, v: Any) -> bool:
        return (
            not isinstance(v, (str, type))  # an instance, not a class
            and all(callable(getattr(v, m, None)) for m in self.methods)
        )

    def __str__(self) -> str:
        return "an object implementing " + " and ".join(repr(m) for m in self.methods)


class _Bool:
    def accepts(self, v):
        return isinstance(v, (bool, np.bool_))

    def __str__(self):
        return "an instance of 'bool'"


class _RandomState:
    def accepts(self, v):
        if v is None or isinstance(v, np.random.RandomState):
            return True
        return isinstance(v, numbers.Integral) and not isinstance(v, bool) and 0 <= v <= 2**32 - 1

    def __str__(self):
        return (
            "an int in the range [0, 4294967295], an instance of 'numpy.random.RandomState' or None"
        )


class _NoneType:
    def accepts(self, v):
        return v is None

    def __str__(self):
        return "None"


BOOLEAN = _Bool()
RANDOM_STATE = _RandomState()
NONE = _NoneType()


def _describe(constraints: Sequence) -> str:
    parts = [str(c) for c in constraints]
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " or " + parts[-1]


def validate_params(estimator: Any, constraints: dict[str, Sequence]) -> None:
    """Check every ``get_params(deep=False)`` value against ``constraints``.

    Raises
    ------
    InvalidParameterError
        For the first parameter (in constructor order) that matches none of
        its accepted forms.
    """
    params = estimator.get_params(deep=False)
    name = type(estimator).__name__
    for param, accepted in constraints.items():
        value = params[param]
        if any(c.accepts(value) for c in accepted):
            continue
        raise InvalidParameterError(
            f"The {param!r} parameter of {name} must be {_describe(accepted)}. "
            f"Got {value!r} instead."
        )


#: The parameters both boosting estimators take, and the forms each accepts (each
#: estimator adds its loss and its init, ``residuals.boosting._estimators``).
COMMON_CONSTRAINTS: dict[str, list] = {
    "learning_rate": [Interval("real", 0.0, None, "left")],
    "n_estimators": [Interval("int", 1, None, "left")],
    "subsample": [Interval("real", 0.0, 1.0, "right")],
    "criterion": [Options("deprecated", "friedman_mse", "squared_error")],
    "min_samples_split": [
        Interval("int", 2, None, "left"),
        Interval("real_not_int", 0.0, 1.0, "right"),
    ],
    "min_samples_leaf": [
        Interval("int", 1, None, "left"),
        Interval("real_not_int", 0.0, 1.0, "neither"),
    ],
    "min_weight_fraction_leaf": [Interval("real", 0.0, 0.5, "both")],
    "max_depth": [Interval("int", 1, None, "left"), NONE],
    "min_impurity_decrease": [Interval("real", 0.0, None, "left")],
    "random_state": [RANDOM_STATE],
    "max_features": [
        Interval("int", 1, None, "left"),
        Interval("real_not_int", 0.0, 1.0, "right"),
        Options("sqrt", "log2"),
        NONE,
    ],
    "verbose": [Interval("int", 0, None, "left"), BOOLEAN],
    "max_leaf_nodes": [Interval("int", 2, None, "left"), NONE],
    "warm_start": [BOOLEAN],
    "validation_fraction": [Interval("real", 0.0, 1.0, "neither")],
    "n_iter_no_change": [Interval("int", 1, None, "left"), NONE],
    "tol": [Interval("real", 0.0, None, "left")],
    "ccp_alpha": [Interval("real", 0.0, None, "left")],
    "tree_method": [Options("exact", "hist")],
    "max_bins": [Interval("int", 2, 255, "both")],
    "device": [Options("cpu", "cuda", "auto")],
    "distributed": [BOOLEAN],
}
