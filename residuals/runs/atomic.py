"""Atomic file writes: the one implementation every layer uses (run tables, meta.json, report
pages, training checkpoints).

A reader -- another process, a report being rebuilt, a resumed run -- sees the old file or the
new one, never half of either: the content goes to a temporary file beside the target (unique
to this process and thread, so two writers never share one), is flushed and fsync'ed, and is
renamed over the target with ``os.replace``. On any failure, including ``KeyboardInterrupt``,
the temporary file is removed and the target is left as it was.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = ["atomic_write", "atomic_write_text"]

Content = str | bytes | Callable[[IO[bytes]], object]


def atomic_write(path: str | os.PathLike, content: Content, *, fsync: bool = True) -> Path:
    """Write ``content`` to ``path`` atomically and return the path.

    ``content`` is text (written as UTF-8), bytes, or a function that writes into the binary
    file it is given (e.g. ``lambda f: torch.save(obj, f)``). The parent folder is created if
    missing. ``fsync=False`` skips the flush to disk (the rename stays atomic).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(
        f".{path.name}.{os.getpid()}.{threading.get_ident()}.{secrets.token_hex(3)}.tmp"
    )
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
        try:
            with os.fdopen(fd, "wb") as f:
                if isinstance(content, str):
                    f.write(content.encode("utf-8"))
                elif isinstance(content, (bytes, bytearray, memoryview)):
                    f.write(content)
                else:
                    content(f)
                if fsync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.lexists(tmp):
                os.unlink(tmp)
    except OSError as e:  # name the file being written, not its temporary
        if e.filename is None or str(e.filename) == str(tmp):
            raise type(e)(e.errno, e.strerror, str(path)) from e
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write` for text (UTF-8)."""
    return atomic_write(path, text)
