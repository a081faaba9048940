"""Real reports from the real benches (made small), checked in headless Chromium.

A small degradation run and a small boosting run are trained here, their
reports built by the same code a bench calls; then Chromium (Debian's
``chromium`` package) loads each page -- as a file, served over HTTP by
``residuals report serve``'s server, and copied elsewhere without its folder --
and we assert, through the DevTools protocol, that every image decoded
(``naturalWidth > 0``), that the console shows no error, that the headline and
tables are there and that nothing overflows a laptop-width window. A full-page
screenshot of each is saved under pytest's tmp dir, and also under
``$RESIDUALS_SCREENSHOTS`` when set.

The DevTools client below is a minimal RFC 6455 websocket over the standard
library, so the test needs no extra Python package.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from residuals.report.html import build_report
from residuals.report.serve import make_server, url_of

CHROMIUM = next(
    (
        shutil.which(n)
        for n in ("chromium", "chromium-browser", "google-chrome", "chrome")
        if shutil.which(n)
    ),
    None,
)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary (apt-get install chromium)"
)
LAPTOP = (1280, 800)  # CSS px


# ------------------------------------------------------------------ real runs
@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """reports/ with one small real degradation run and one small real boosting run."""
    from residuals.bench import boosting as B
    from residuals.bench import degradation as D
    from residuals.runs import RunDir

    root = tmp_path_factory.mktemp("browser") / "reports"
    cfg = D.configure(
        "digits", depths=(8,), seeds=1, epochs=2, warmup="none", batch_size=256, probe_batch=32
    )
    deg = RunDir.create(
        root,
        "degradation",
        cfg.dataset,
        cfg.to_dict(),
        device="cpu",
        name="degradation",
        command="residuals bench degradation --depths 8 --seeds 1 --epochs 2 --warmup none",
    )
    verdict = D.degradation_verdict(
        D.run_sweep(deg, cfg, device="cpu", jobs=1, echo=lambda m: None)
    )
    deg.finish("complete", headline=verdict.headline, verdict=verdict.reproduced)

    bcfg = B.BoostingBenchConfig.quick(
        datasets=("diabetes",), losses=("squared_error",), n_estimators=10
    )
    boost = RunDir.create(
        root,
        "boosting",
        "custom",
        bcfg.validate().as_dict(),
        device="cpu",
        name="boosting",
        command="residuals bench boosting --datasets diabetes --losses squared_error "
        "--n-estimators 10",
    )
    B.run_benchmark(bcfg, boost)
    boost.finish("complete")
    for run in (deg, boost):
        build_report(run.path)
    return root


@pytest.mark.parametrize("bench", ["degradation", "boosting"])
def test_real_report_is_complete_and_self_contained(reports, bench):
    """Without a browser: the real renderers' pages hold what the issue asks for."""
    import pandas as pd

    run = reports / bench
    page = (run / "index.html").read_text()
    meta = json.loads((run / "meta.json").read_text())
    assert meta["headline"] and meta["headline"].split(":")[0] in page
    assert "http://" not in page and "https://" not in page
    assert all(s.startswith("data:image/png;base64,") for s in re.findall(r'\bsrc="([^"]*)"', page))
    figures = sorted(p.stem for p in (run / "figures").glob("*.png"))
    assert figures and figures == sorted(p.stem for p in (run / "figures").glob("*.csv"))
    assert page.count("<img ") == len(figures)
    for key in figures:
        assert (
            f'href="./figures/{key}.csv"' in page
            and not pd.read_csv(run / "figures" / f"{key}.csv").empty
        )
    assert "<table" in page and meta["command"] in page and meta["versions"]["torch"] in page
    assert 'href="./' + bench + '/index.html"' in (reports / "index.html").read_text()


# label keyword -> style.COLORS key: a line so labelled must be drawn in that colour's hue
# (renderers may shade it lighter or darker, e.g. by depth)
COLOR_FAMILIES = {
    "plain": "plain",
    "resnet": "residual",
    "residual": "residual",
    "sklearn gbrt": "sklearn-gbrt",
    "sklearn histgb": "sklearn-hist",
    "ours, exact": "ours-exact",
    "ours, hist": "ours-hist",
    "lightgbm": "lightgbm",
}


def _hue(color) -> float:
    import colorsys

    from matplotlib.colors import to_rgb

    return colorsys.rgb_to_hsv(*to_rgb(color))[0] * 360


@pytest.mark.parametrize("bench", ["degradation", "boosting"])
def test_real_figures_follow_the_shared_style(reports, bench):
    """Every figure of every bench: titled, labelled axes, a legend, laptop width; train dashed,
    test solid; plain/residual and ours/sklearn in their fixed colours (residuals.report.style)."""
    import matplotlib.pyplot as plt

    from residuals.report import style
    from residuals.report.html import render_content
    from residuals.runs import RunDir

    content = render_content(RunDir(reports / bench))
    checked = {"style": 0, "color": 0}
    for f in content.figures:
        fig = f.fig
        axes = [ax for ax in fig.axes if ax.get_visible() and ax.has_data()]
        assert axes, f.key
        assert fig.get_suptitle() or all(ax.get_title() for ax in axes), f"{f.key}: no title"
        assert all(ax.get_xlabel() for ax in axes), f"{f.key}: an x axis without label"
        assert any(ax.get_ylabel() for ax in axes), f"{f.key}: no y label"
        assert fig.legends or any(ax.get_legend() for ax in axes), f"{f.key}: no legend"
        assert 700 <= fig.get_size_inches()[0] * fig.dpi <= 1000, f"{f.key}: not laptop width"
        for ax in axes:
            for line in ax.get_lines():
                label = line.get_label().lower()
                if label.startswith("_"):
                    continue
                words = set(re.split(r"[^a-z]+", label))
                if "train" in words or "test" in words:
                    split = "train" if "train" in words else "test"
                    assert line.get_linestyle() == style.linestyle(split), (f.key, label)
                    checked["style"] += 1
                family = next((v for k, v in COLOR_FAMILIES.items() if k in label), None)
                if family:
                    gap = abs(_hue(line.get_color()) - _hue(style.COLORS[family])) % 360
                    assert min(gap, 360 - gap) < 20, (f.key, label, line.get_color())
                    checked["color"] += 1
        plt.close(fig)
    assert checked["style"] > 0 and checked["color"] > 0


# --------------------------------------------------------------- DevTools client
class DevTools:
    """Just enough of the Chrome DevTools protocol over a stdlib websocket."""

    def __init__(self, ws_url: str, timeout: float = 30.0):
        m = re.match(r"ws://([^/:]+):(\d+)(/.*)", ws_url)
        host, port, path = m.group(1), int(m.group(2)), m.group(3)
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("DevTools closed the connection during the handshake")
            head += chunk
        head, _, self.buf = head.partition(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise ConnectionError(head.decode(errors="replace"))
        self.next_id = 0
        self.events: list[dict] = []

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("DevTools connection closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 1 << 16:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def _recv_message(self) -> dict:
        parts = []
        while True:
            b0, b1 = self._read(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            mask = self._read(4) if b1 & 0x80 else None
            payload = self._read(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x9:  # ping
                self._send_frame(0xA, payload)
                continue
            if opcode == 0x8:
                raise ConnectionError("DevTools closed the websocket")
            parts.append(payload)
            if b0 & 0x80:  # FIN: the message is complete
                return json.loads(b"".join(parts))

    def call(self, method: str, **params):
        self.next_id += 1
        my_id = self.next_id
        self._send_frame(
            0x1, json.dumps({"id": my_id, "method": method, "params": params}).encode()
        )
        while True:
            msg = self._recv_message()
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def wait_for(self, event: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        for i, e in enumerate(self.events):
            if e["method"] == event:
                return self.events.pop(i)
        while time.monotonic() < deadline:
            msg = self._recv_message()
            if msg.get("method") == event:
                return msg
            if "method" in msg:
                self.events.append(msg)
        raise TimeoutError(event)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium with remote debugging; yields a DevTools session on its page."""
    if CHROMIUM is None:
        pytest.skip("no chromium binary (apt-get install chromium)")
    profile = tempfile.mkdtemp(prefix="residuals-chromium-")
    log = open(Path(profile) / "stderr.log", "wb")
    proc = subprocess.Popen(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--mute-audio",
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            f"--window-size={LAPTOP[0]},{LAPTOP[1]}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        port_file = Path(profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.is_file() and port_file.read_text().count("\n") >= 1):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    "chromium did not start: " + (Path(profile) / "stderr.log").read_text()[-2000:]
                )
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/json/list")
        pages = [t for t in json.loads(conn.getresponse().read()) if t["type"] == "page"]
        conn.close()
        dt = DevTools(pages[0]["webSocketDebuggerUrl"])
        for domain in ("Page", "Runtime", "Log"):
            dt.call(f"{domain}.enable")
        yield dt
        dt.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(profile, ignore_errors=True)


PROBE = """JSON.stringify({
  images: Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete,
      w: i.naturalWidth, h: i.naturalHeight, shown: i.getBoundingClientRect().width})),
  headline: (document.getElementById('headline') || {}).innerText || '',
  tables: Array.from(document.querySelectorAll('main table')).map(t => t.rows.length),
  command: (document.getElementById('command') || {}).innerText || '',
  details: !!document.getElementById('details'),
  overflow: document.documentElement.scrollWidth - window.innerWidth,
  main: document.querySelector('main').getBoundingClientRect().width,
})"""


def load_and_check(dt: DevTools, url: str, shot: Path) -> dict:
    """Navigate, wait for load, return the page facts; fail on any console error."""
    dt.events.clear()
    dt.call(
        "Emulation.setDeviceMetricsOverride",
        width=LAPTOP[0],
        height=LAPTOP[1],
        deviceScaleFactor=1,
        mobile=False,
    )
    dt.call("Page.navigate", url=url)
    dt.wait_for("Page.loadEventFired")
    facts = json.loads(
        dt.call("Runtime.evaluate", expression=PROBE, returnByValue=True)["result"]["value"]
    )
    errors = [
        e
        for e in dt.events
        if (
            e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert")
        )
        or e["method"] == "Runtime.exceptionThrown"
        or (e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
    ]
    assert not errors, f"console errors on {url}: {errors}"

    height = dt.call("Page.getLayoutMetrics")["cssContentSize"]["height"]
    png = base64.b64decode(
        dt.call(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": LAPTOP[0], "height": height, "scale": 1},
        )["data"]
    )
    shot.write_bytes(png)
    extra = os.environ.get("RESIDUALS_SCREENSHOTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(extra) / shot.name)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">I", png[16:20])[0] == LAPTOP[0]
    return facts


def assert_report(facts: dict, n_figures: int) -> None:
    assert len(facts["images"]) == n_figures > 0
    for img in facts["images"]:
        assert img["complete"] and img["w"] > 0 and img["h"] > 0, img
        assert 0 < img["shown"] <= facts["main"], img  # scaled to the column, never wider
    assert facts["headline"].strip()
    assert facts["tables"] and all(
        rows >= 2 for rows in facts["tables"]
    )  # header + at least one row
    assert facts["command"].startswith("residuals bench") and facts["details"]
    assert facts["overflow"] <= 0, "the page scrolls sideways at laptop width"
    assert facts["main"] <= 1000


@needs_chromium
@pytest.mark.browser
@pytest.mark.parametrize("bench", ["degradation", "boosting"])
def test_report_in_chromium_as_file_served_and_copied(reports, browser, bench, tmp_path):
    run = reports / bench
    n_figures = len(list((run / "figures").glob("*.png")))

    facts = load_and_check(browser, (run / "index.html").as_uri(), tmp_path / f"{bench}-file.png")
    assert_report(facts, n_figures)
    meta = json.loads((run / "meta.json").read_text())
    assert meta["headline"] in facts["headline"]

    server = make_server(reports, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert_report(
            load_and_check(
                browser, f"{url_of(server)}{bench}/index.html", tmp_path / f"{bench}-served.png"
            ),
            n_figures,
        )
        index = load_and_check(browser, url_of(server), tmp_path / "index-served.png")
        assert (
            index["headline"] == "" and index["tables"]
        )  # the runs index: a table, no verdict box
    finally:
        server.shutdown()
        server.server_close()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(run / "index.html", elsewhere / "report.html")  # the page alone, no CSVs beside it
    assert_report(
        load_and_check(
            browser, (elsewhere / "report.html").as_uri(), tmp_path / f"{bench}-copied.png"
        ),
        n_figures,
    )


@needs_chromium
@pytest.mark.browser
def test_index_and_comparison_pages_in_chromium(reports, browser, tmp_path, monkeypatch):
    import report_helpers as H

    from residuals.report.compare import compare_runs

    H.register(monkeypatch)
    a, b = H.make_run(reports, name="fake-a", lr=0.1), H.make_run(reports, name="fake-b", lr=0.05)
    page = compare_runs([a.path, b.path], warn=pytest.fail)
    facts = load_and_check(browser, page.as_uri(), tmp_path / "compare.png")
    assert len(facts["images"]) == 1 and all(i["complete"] and i["w"] > 0 for i in facts["images"])
    assert "compared" in facts["headline"] and len(facts["tables"]) >= 3 and facts["overflow"] <= 0

    facts = load_and_check(browser, (reports / "index.html").as_uri(), tmp_path / "index.png")
    assert facts["tables"] and facts["tables"][0] >= 3 and facts["overflow"] <= 0


@needs_chromium
@pytest.mark.browser
def test_the_checks_catch_broken_images_and_console_errors(browser, tmp_path):
    """The assertions above are only worth something if they can fail."""

    def page(body):
        path = tmp_path / "bad.html"
        path.write_text(
            '<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body><main>'
            f'<div id="headline">h</div><table><tr><td>1</td></tr></table>{body}</main></body></html>'
        )
        return path.as_uri()

    with pytest.raises(AssertionError, match="console errors.*boom"):
        load_and_check(
            browser, page('<script>console.error("boom")</script>'), tmp_path / "bad.png"
        )
    with pytest.raises(AssertionError, match="console errors.*missing.png"):
        load_and_check(browser, page('<img src="missing.png" alt="gone">'), tmp_path / "bad.png")
    # an image that loads but does not decode: no console message, caught by its natural size
    facts = load_and_check(
        browser, page('<img src="data:image/png;base64,AAAA" alt="corrupt">'), tmp_path / "bad.png"
    )
    assert facts["images"][0]["w"] == 0
    with pytest.raises(AssertionError):
        assert_report(facts, 1)
