"""Lazy package exports: a package's names are imported on first use (SPEC 1, as
``lazy_loader.attach_stub`` does), so ``import residuals.train`` or ``--help`` loads no torch.

A package lists its exports once, as ordinary imports under ``if TYPE_CHECKING:`` (type
checkers and editors read them there); :func:`lazy_exports` reads that block from the package's
source and imports each name from its module when it is first asked for::

    if TYPE_CHECKING:
        from residuals.train.config import TrainConfig
    __getattr__, __dir__, __all__ = lazy_exports(__name__, __file__)
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["lazy_exports"]


def _type_checking_imports(source: str) -> dict[str, tuple[str, str]]:
    """``{exported name: (module, name in it)}`` of the ``if TYPE_CHECKING:`` imports."""
    exports: dict[str, tuple[str, str]] = {}
    for node in ast.parse(source).body:
        if (
            isinstance(node, ast.If)
            and isinstance(node.test, ast.Name)
            and node.test.id == "TYPE_CHECKING"
        ):
            for stmt in node.body:
                if isinstance(stmt, ast.ImportFrom) and stmt.module and stmt.level == 0:
                    for alias in stmt.names:
                        exports[alias.asname or alias.name] = (stmt.module, alias.name)
    return exports


def lazy_exports(
    package: str, init_file: str
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``(__getattr__, __dir__, __all__)`` for the package ``package`` whose ``__init__.py`` is
    ``init_file``."""
    exports = _type_checking_imports(Path(init_file).read_text(encoding="utf-8"))
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> Any:
        if name not in exports:
            try:  # a submodule, e.g. residuals.data.files
                return importlib.import_module(f"{package}.{name}")
            except ModuleNotFoundError as e:
                if e.name != f"{package}.{name}":
                    raise
                raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        module, attr = exports[name]
        value = getattr(importlib.import_module(module), attr)
        namespace[name] = value  # later lookups do not come back here
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports})

    return __getattr__, __dir__, sorted(exports)
