"""Which function renders a bench's run folder into report content: one registry.

A bench registers its renderer, ``render(run: RunDir) -> ReportContent``, under the name it
writes as ``bench`` in meta.json, either as the function or as ``"module:function"`` (imported
on first use, so registering costs nothing). ``residuals.report`` looks renderers up here and
never names a bench; the built-in benches register in :mod:`residuals.bench`, which the
package imports on load.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["RENDERERS", "get_renderer", "register_renderer"]

# bench name -> the renderer, or "module:function"
RENDERERS: dict[str, Callable[..., Any] | str] = {}


def register_renderer(bench: str, renderer: Callable[..., Any] | str) -> None:
    """Render run folders whose meta.json says ``bench`` with ``renderer``."""
    if isinstance(renderer, str) and ":" not in renderer:
        raise ValueError(f"a renderer given by name is 'module:function', got {renderer!r}")
    RENDERERS[bench] = renderer


def get_renderer(bench: str) -> Callable[..., Any]:
    """The renderer registered for ``bench``; ``ValueError`` naming the known ones otherwise."""
    try:
        target = RENDERERS[bench]
    except KeyError:
        raise ValueError(
            f"no report renderer for bench {bench!r}; known: {sorted(RENDERERS)}"
        ) from None
    if callable(target):
        return target
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func)
