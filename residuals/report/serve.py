"""Serve a reports folder over HTTP on 127.0.0.1 only (never on other interfaces).

Reports are self-contained files, so a static file server is all they need;
serving them only makes the CSV links work from another tab or a notebook.
"""

from __future__ import annotations

import functools
import os
import sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

__all__ = ["HOST", "make_server", "serve_forever", "url_of"]

HOST = "127.0.0.1"


class _QuietHandler(SimpleHTTPRequestHandler):
    """Static files; errors (404 etc.) are logged one line each, successful requests are not."""

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass

    def log_error(self, format, *args):  # noqa: A002
        sys.stderr.write(f"{self.address_string()} - {format % args}\n")

    def end_headers(self):
        # reports are rebuilt in place: never show a stale copy after `report build`
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


def make_server(root: str | os.PathLike, port: int = 0) -> ThreadingHTTPServer:
    """A server for ``root`` bound to 127.0.0.1:port (0: any free port). Not started yet."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = ThreadingHTTPServer((HOST, port), handler)
    server.daemon_threads = True
    return server


def url_of(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}/"


def serve_forever(server: ThreadingHTTPServer, echo=print) -> None:
    """Serve until Ctrl-C, then close the socket and say so."""
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        echo("\nstopped.")
    finally:
        server.server_close()
