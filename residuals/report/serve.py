"""Serve a reports folder over HTTP on 127.0.0.1 only (never on other interfaces).

Reports are self-contained files, so a static file server is all they need;
serving them only makes the CSV links work from another tab or a notebook.

The server hands out what a report is made of and nothing else:

* regular files inside the served folder, after resolving symbolic links (a link
  that points outside is refused, as is ``../``);
* only the kinds of file a report links to (:data:`SERVED_SUFFIXES`: pages, CSV
  tables, PNG figures, meta.json); no dot-files or dot-folders, no ``checkpoints/``;
* a folder only through its ``index.html``: there are no directory listings;
* only to requests whose ``Host`` header names the bound address (``127.0.0.1:PORT``
  or ``localhost:PORT``), so a web page on another site cannot read the reports by
  pointing its own host name at 127.0.0.1 (DNS rebinding).

Everything else is answered 404 (403 for a wrong ``Host``), with nothing about
the file system in the reply.
"""

from __future__ import annotations

import functools
import os
import posixpath
import sys
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

__all__ = ["HOST", "SERVED_SUFFIXES", "make_server", "serve_forever", "url_of"]

HOST = "127.0.0.1"
SERVED_SUFFIXES = frozenset({".html", ".csv", ".png", ".json"})
HIDDEN_FOLDERS = frozenset({"checkpoints"})  # run state, not part of any report
_LOCAL_NAMES = (HOST, "localhost")


class _ReportHandler(SimpleHTTPRequestHandler):
    """Static report files under one root (see the module docstring for what is served);
    errors (404 etc.) are logged one line each, successful requests are not."""

    def log_message(self, format, *args):  # the base class's signature
        pass

    def log_error(self, format, *args):
        sys.stderr.write(f"{self.address_string()} - {format % args}\n")

    def end_headers(self):
        # reports are rebuilt in place: never show a stale copy after `report build`
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        super().end_headers()

    # ------------------------------------------------------------- checks
    def _host_ok(self) -> bool:
        host = (self.headers.get("Host") or "").strip().lower()
        port = self.server.server_address[1]  # type: ignore[index]  # an (host, port) pair
        return host in {f"{name}:{port}" for name in _LOCAL_NAMES} | (
            set(_LOCAL_NAMES) if port == 80 else set()
        )

    def _resolve(self) -> tuple[Path | None, bool]:
        """The file this request may read (None: the answer is 404), and whether the request
        named a folder without its trailing slash."""
        root = Path(self.directory).resolve()
        rel = unquote(urlsplit(self.path).path)
        if "\x00" in rel:
            return None, False
        parts = [p for p in posixpath.normpath("/" + rel).split("/") if p]
        if any(p.startswith(".") or p in HIDDEN_FOLDERS for p in parts):
            return None, False
        target = root.joinpath(*parts)
        folder = target.is_dir()
        if folder or rel.endswith("/"):
            target = target / "index.html"
        try:
            real = target.resolve(strict=True)
        except (OSError, RuntimeError):  # missing, or a loop of links
            return None, False
        try:
            inside = real.relative_to(root).parts
        except ValueError:  # a link that points outside the root
            return None, False
        if any(p.startswith(".") or p in HIDDEN_FOLDERS for p in inside):
            return None, False
        if not real.is_file() or real.suffix.lower() not in SERVED_SUFFIXES:
            return None, False
        return real, folder and not rel.endswith("/")

    # ----------------------------------------------------------- requests
    def send_head(self):
        if not self._host_ok():
            self.send_error(HTTPStatus.FORBIDDEN, "unexpected Host header")
            return None
        real, needs_slash = self._resolve()
        if needs_slash:
            # a folder without its trailing slash: redirect, so its page's relative links work
            self.send_response(HTTPStatus.MOVED_PERMANENTLY)
            self.send_header("Location", urlsplit(self.path).path + "/")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if real is None:
            self.send_error(HTTPStatus.NOT_FOUND, "File not found")
            return None
        try:
            f = open(real, "rb")  # noqa: SIM115 - returned to the base class, which closes it
        except OSError:
            self.send_error(HTTPStatus.NOT_FOUND, "File not found")
            return None
        try:
            fs = os.fstat(f.fileno())
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-type", self.guess_type(str(real)))
            self.send_header("Content-Length", str(fs.st_size))
            self.send_header("Last-Modified", self.date_time_string(fs.st_mtime))
            self.end_headers()
            return f
        except BaseException:
            f.close()
            raise

    def list_directory(self, path):  # never: folders are served through their index.html
        self.send_error(HTTPStatus.NOT_FOUND, "File not found")


def make_server(root: str | os.PathLike, port: int = 0) -> ThreadingHTTPServer:
    """A server for ``root`` bound to 127.0.0.1:port (0: any free port). Not started yet."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    handler = functools.partial(_ReportHandler, directory=str(root))
    server = ThreadingHTTPServer((HOST, port), handler)
    server.daemon_threads = True
    return server


def url_of(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    host = host.decode() if isinstance(host, bytes) else host
    return f"http://{host}:{port}/"


def serve_forever(server: ThreadingHTTPServer, echo=print) -> None:
    """Serve until Ctrl-C, then close the socket and say so."""
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        echo("\nstopped.")
    finally:
        server.server_close()
