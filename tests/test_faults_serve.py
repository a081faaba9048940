"""Fault injection on ``residuals report serve``: a hostile reports folder (links that point
outside, dot-folders, checkpoints, stray files) and hostile requests (``../``, encoded
dots, another site's ``Host``). Only what a report needs is served (docs/reliability.md)."""

from __future__ import annotations

import http.client
import os
import threading

import pytest

from residuals.report.serve import make_server


@pytest.fixture
def served(tmp_path):
    """A reports folder with a run, plus everything that must not leave the server."""
    root = tmp_path / "reports"
    run = root / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "figures").mkdir()
    (root / ".git").mkdir()
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "passwd").write_text("root:x:0:0")
    (root / "index.html").write_text("<p>runs</p>")
    (run / "index.html").write_text("<p>run</p>")
    (run / "results.csv").write_text("a\n1\n")
    (run / "meta.json").write_text('{"bench": "x"}')
    (run / "figures" / "curves.png").write_bytes(b"\x89PNG\r\n")
    (run / "checkpoints" / "plain8-seed0.pt").write_bytes(b"weights")
    (run / ".meta.json.1234.tmp").write_text("{}")
    (run / "notes.txt").write_text("not part of a report")
    (root / ".git" / "config").write_text("[core]")
    (root / "noindex").mkdir()
    (root / "noindex" / "results.csv").write_text("a\n1\n")
    os.symlink(secret, root / "outside_link")  # a folder outside
    os.symlink(secret / "passwd", run / "passwd.csv")  # a file outside, served name
    os.symlink(run / "results.csv", run / "inside_link.csv")  # inside: fine
    server = make_server(root, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def get(port: int, path: str, host: str | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
    conn.putheader("Host", host if host is not None else f"127.0.0.1:{port}")
    conn.endheaders()
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body


@pytest.mark.parametrize(
    "path, body",
    [
        ("/", b"<p>runs</p>"),
        ("/run/", b"<p>run</p>"),
        ("/run/index.html", b"<p>run</p>"),
        ("/run/results.csv", b"a\n1\n"),
        ("/run/meta.json", b'{"bench": "x"}'),
        ("/run/figures/curves.png", b"\x89PNG\r\n"),
        ("/run/inside_link.csv", b"a\n1\n"),
    ],
)
def test_what_a_report_needs_is_served(served, path, body):
    assert get(served, path) == (200, body)


@pytest.mark.parametrize(
    "path",
    [
        "/outside_link/passwd",
        "/outside_link/",
        "/run/passwd.csv",  # links that leave the root
        "/run/checkpoints/plain8-seed0.pt",
        "/run/checkpoints/",  # run state
        "/.git/config",
        "/.git/",
        "/run/.meta.json.1234.tmp",  # dot-files
        "/run/notes.txt",  # not a report file
        "/noindex/",  # no directory listings
        "/../secret/passwd",
        "/%2e%2e/secret/passwd",
        "/run/%2e%2e/%2e%2e/secret/passwd",
        "/run/results.csv%00.html",
    ],
)
def test_nothing_else_leaves_the_server(served, path):
    status, body = get(served, path)
    assert status == 404, (path, status)
    assert b"root:x" not in body and b"weights" not in body and b"[core]" not in body


def test_a_folder_without_its_slash_is_redirected_not_listed(served):
    status, _ = get(served, "/run")
    assert status == 301
    assert get(served, "/noindex")[0] == 404


@pytest.mark.parametrize(
    "host, ok",
    [
        ("127.0.0.1:{port}", True),
        ("localhost:{port}", True),
        ("LOCALHOST:{port}", True),
        ("evil.example:{port}", False),
        ("evil.example", False),
        ("127.0.0.1.evil.example:{port}", False),
        ("", False),
    ],
)
def test_only_the_bound_host_name_is_answered(served, host, ok):
    status, body = get(served, "/run/results.csv", host=host.format(port=served))
    assert (status == 200) is ok, (host, status)
    if not ok:
        assert status == 403 and b"a\n1" not in body
