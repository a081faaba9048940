"""The packages that export their names lazily (residuals._lazy): every export resolves to
what the package's TYPE_CHECKING block names, whatever was imported first.

A submodule named like one of its package's exports would be set on the package by the
import system the first time anything imports that submodule, hiding the export: e.g. a
function ``run`` in ``run.py`` became the module ``run`` once another export of ``run.py``
had been used (``residuals train --resume`` failed with "'module' object is not callable").
"""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import residuals
from residuals._lazy import _type_checking_imports

ROOT = Path(residuals.__file__).parent
LAZY = sorted(
    ".".join(("residuals", *p.parent.relative_to(ROOT).parts))
    for p in ROOT.rglob("__init__.py")
    if "lazy_exports(" in p.read_text(encoding="utf-8")
)


def test_the_lazy_packages_are_found():
    assert {"residuals.train", "residuals.data", "residuals.bench.train"} <= set(LAZY)


@pytest.mark.parametrize("package", LAZY)
def test_no_export_shares_its_name_with_a_submodule(package):
    pkg = importlib.import_module(package)
    exports = _type_checking_imports(Path(pkg.__file__).read_text(encoding="utf-8"))
    submodules = {m.name for m in pkgutil.iter_modules(pkg.__path__)}
    assert not sorted(set(exports) & submodules)


@pytest.mark.parametrize("package", LAZY)
def test_each_export_is_the_named_object_after_every_submodule_is_imported(package):
    code = f"""
import importlib, pkgutil
from pathlib import Path
from residuals._lazy import _type_checking_imports
pkg = importlib.import_module({package!r})
for m in pkgutil.iter_modules(pkg.__path__):
    importlib.import_module({package!r} + "." + m.name)
for name, (module, attr) in _type_checking_imports(Path(pkg.__file__).read_text()).items():
    assert getattr(pkg, name) is getattr(importlib.import_module(module), attr), name
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
