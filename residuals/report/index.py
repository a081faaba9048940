"""The index of all runs under a reports folder, newest first.

A reports root holds run folders (each with a meta.json), comparison folders
(each with a compare.json, written by ``residuals report compare``) and *groups*:
sub-folders that themselves hold runs, such as ``reports/examples/`` (the
committed example reports) and ``reports/compare/``. Groups are listed in their
own section, so committed examples never mix with one's own runs.

Scanning never raises on a bad folder: a folder without a readable meta.json, a
run with no results.csv (or the main table its meta.json names as ``results_table``), a
run still marked ``running`` -- each is listed with
its problem, and everything else is listed as usual. The index reads only
meta.json files (never the results), so it stays fast and needs no plotting
library.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from residuals.report import layout as L
from residuals.runs import BrokenRun, RunDir

__all__ = [
    "EXAMPLES_GROUP",
    "Entry",
    "scan",
    "write_index",
    "refresh_indexes",
    "find_run",
    "index_html",
    "COMPARE_FILE",
]

COMPARE_FILE = "compare.json"
INDEX_KIND = "runs-index"  # in the page's generator meta tag: an index.html this module may rewrite
_SKIP = {"__pycache__", "figures", "tables"}
EXAMPLES_GROUP = "examples"  # committed example runs: `report build --all` leaves them be
_GROUPS = {EXAMPLES_GROUP, "compare"}  # always groups, even while empty


@dataclass
class Entry:
    """One row of the index: a run, a comparison, or a broken folder."""

    path: Path
    kind: str = "run"  # "run" | "comparison" | "broken"
    group: str = ""  # "" for the root itself, else the group folder's name
    bench: str = ""
    dataset: str = ""
    started_at: str | None = None
    device: str = ""
    status: str = "broken"  # meta.json status, or "broken"
    headline: str = ""
    verdict: bool | None = None
    wall_s: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def report(self) -> Path | None:
        p = self.path / "index.html"
        return p if p.is_file() else None

    @property
    def ok(self) -> bool:
        return self.kind != "broken" and not self.problems

    @property
    def when(self) -> _dt.datetime:
        t = L.parse_time(self.started_at)
        if t is not None:
            return t
        try:  # broken folders: when the folder last changed
            return _dt.datetime.fromtimestamp(self.path.stat().st_mtime).astimezone()
        except OSError:
            return _dt.datetime.min.replace(tzinfo=_dt.UTC)


def _run_entry(path: Path, group: str) -> Entry:
    run = RunDir(path)
    try:
        meta = run.read_meta()
    except BrokenRun as e:
        return Entry(path, "broken", group, problems=[str(e).removeprefix(f"{path}: ")])
    try:
        return _describe_run(run, meta, group)
    except Exception as exc:  # a meta.json with odd contents must not break the index
        return Entry(
            path, "broken", group, problems=[f"meta.json has unexpected contents ({exc!r})"]
        )


def _describe_run(run: RunDir, meta: dict, group: str) -> Entry:
    from residuals.report.html import device_label

    path = run.path
    headline = meta.get("headline")
    e = Entry(
        path,
        "run",
        group,
        bench=str(meta.get("bench", "")),
        dataset=str(meta.get("dataset") or ""),
        started_at=meta.get("started_at"),
        device=device_label(meta),
        status=str(meta.get("status") or "unknown"),
        headline="" if headline is None else str(headline),
        verdict=meta.get("verdict") if isinstance(meta.get("verdict"), bool) else None,
        wall_s=meta.get("wall_s"),
    )
    if e.status == "running":
        e.problems.append("no end time: still running, or killed before it finished")
    elif e.status in ("interrupted", "failed"):
        e.problems.append(f"run {e.status}: results are partial")
    main = str(meta.get("results_table") or "results")  # a bench may name its main table
    if not run.has_table(main):
        e.problems.append(f"{main}.csv is missing")
    if meta.get("report_problem"):
        e.problems.append(str(meta["report_problem"]))
    if e.report is None:  # a path works under any --root (a bare name only under the default)
        e.problems.append(
            f"no report yet: residuals report build {shlex.quote(L.display_path(path))}"
        )
    return e


def _comparison_entry(path: Path, group: str) -> Entry:
    try:
        info = json.loads((path / COMPARE_FILE).read_bytes().decode("utf-8"))
        runs = info["runs"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        return Entry(path, "broken", group, problems=[f"{COMPARE_FILE} is unreadable ({exc})"])
    try:
        created = info.get("created_at")
        e = Entry(
            path,
            "comparison",
            group,
            bench=str(info.get("bench", "")),
            dataset=", ".join(sorted(set(map(str, info.get("datasets") or [])))),
            started_at=None if created is None else str(created),
            device=", ".join(map(str, info.get("devices") or [])),
            status="complete",
            headline=str(
                info.get("headline") or f"compares {len(runs)} runs: " + ", ".join(map(str, runs))
            ),
        )
    except (AttributeError, TypeError) as exc:  # fields of unexpected types
        return Entry(
            path, "broken", group, problems=[f"{COMPARE_FILE} has unexpected contents ({exc})"]
        )
    if e.report is None:
        e.problems.append("index.html is missing")
    return e


def _is_group(path: Path) -> bool:
    """A folder of runs rather than a run: no meta.json, and a sub-folder that is a run or comparison."""
    if (path / "meta.json").exists() or (path / COMPARE_FILE).exists():
        return False
    try:
        return any(
            c.is_dir() and ((c / "meta.json").exists() or (c / COMPARE_FILE).exists())
            for c in path.iterdir()
        )
    except OSError:
        return False


def _entries_in(folder: Path, group: str) -> list[Entry]:
    out = []
    for child in sorted(folder.iterdir()):
        if not child.is_dir() or child.name.startswith(".") or child.name in _SKIP:
            continue
        if (child / COMPARE_FILE).exists():
            out.append(_comparison_entry(child, group))
        elif not group and (child.name in _GROUPS or _is_group(child)):
            out.extend(_entries_in(child, child.name))
        else:
            out.append(_run_entry(child, group))
    return out


def scan(root: str | os.PathLike) -> list[Entry]:
    """Every run, comparison and broken folder under ``root`` (one group level deep), newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    entries = _entries_in(root, "")
    entries.sort(key=lambda e: e.when, reverse=True)
    return entries


def find_run(root: str | os.PathLike, name: str | None = None) -> Path:
    """A run folder named on the command line: a path, a folder name under ``root``
    (or a unique prefix or suffix of one), or None / "latest" for the newest run."""
    root = Path(root)
    if name not in (None, "latest"):
        p = Path(name)
        if p.is_dir():
            return p
        runs = [e for e in scan(root) if e.kind != "comparison"]
        hits = [e.path for e in runs if e.path.name == name] or [
            e.path for e in runs if e.path.name.startswith(name) or e.path.name.endswith(name)
        ]
        if len(hits) == 1:
            return hits[0]
        if not hits:
            raise FileNotFoundError(
                f"no run {name!r}: not a folder, and no run under {root}/ has that name"
            )
        listing = "\n  ".join(str(h) for h in hits)
        raise FileNotFoundError(f"{name!r} matches {len(hits)} runs; name one:\n  {listing}")
    runs = [e for e in scan(root) if e.kind == "run" and e.group == ""] or [
        e for e in scan(root) if e.kind == "run"
    ]
    if not runs:
        raise FileNotFoundError(
            f"no runs under {root}/ (make one with `residuals bench degradation`)"
        )
    return runs[0].path


# --------------------------------------------------------------------- page
_GROUP_TITLES = {
    "": "Runs",
    "examples": "Examples (committed with the repository)",
    "compare": "Comparisons",
}


def _row(e: Entry, root: Path) -> str:
    rel = e.path.relative_to(root).as_posix()
    report = e.report
    link = (
        f'<a href="{L.href(rel + "/index.html")}">{L.esc(e.path.name)}</a>'
        if report
        else L.esc(e.path.name)
    )
    status = e.status if e.kind != "broken" else "broken"
    headline = L.esc(e.headline) if e.headline else "\u2013"
    dot = f'<span class="dot {L.verdict_class(e.verdict)}"></span>' if e.kind == "run" else ""
    problems = "".join(f"<div>{L.esc(p)}</div>" for p in e.problems)
    if problems:
        problems = f'<div class="sub" style="color: var(--bad); margin: 4px 0 0">{problems}</div>'
    t = L.parse_time(e.started_at)
    date = t.strftime("%Y-%m-%d %H:%M") if t else "\u2013"
    cls = ' class="broken"' if e.kind == "broken" else ""
    cells = [L.esc(v) if v else "\u2013" for v in (e.bench, e.dataset, date, e.device)]
    return (
        f'<tr{cls}><td>{cells[0]}</td><td>{cells[1]}</td><td class="num">{cells[2]}</td><td>{cells[3]}</td>'
        f'<td><span class="status {L.esc(status)}">{L.esc(status)}</span></td>'
        f"<td>{dot}{headline}{problems}</td><td>{link}</td></tr>"
    )


def index_html(root: str | os.PathLike, entries: list[Entry] | None = None) -> str:
    root = Path(root)
    entries = scan(root) if entries is None else entries
    groups: dict[str, list[Entry]] = {}
    for e in entries:
        key = "compare" if e.kind == "comparison" and e.group == "" else e.group
        groups.setdefault(key, []).append(e)
    order = sorted(groups, key=lambda g: (g != "", g == "examples", g))
    n_runs = sum(e.kind == "run" for e in entries)
    n_bad = sum(not e.ok for e in entries if e.kind != "comparison")
    body = [
        f'<header><h1>Runs</h1><p class="sub">{n_runs} run{"" if n_runs == 1 else "s"} under '
        f"<code>{L.esc(root.name or root)}</code>, newest first"
        + (f"; {n_bad} broken or partial, listed with their problem" if n_bad else "")
        + ". Rebuild with <code>residuals report build --index</code>.</p></header>"
    ]
    if not entries:
        body.append(
            L.notice("No runs yet. Make one with <code>residuals bench degradation</code>.")
        )
    head = (
        "<thead><tr><th>bench</th><th>dataset</th><th>date</th><th>device</th><th>status</th>"
        "<th>headline</th><th>report</th></tr></thead>"
    )
    for g in order:
        rows = "".join(_row(e, root) for e in groups[g])
        title = _GROUP_TITLES.get(g, g)
        body.append(
            f'<h2 id="group-{L.esc(g or "runs")}">{L.esc(title)}</h2>'
            f'<div class="scroll"><table class="runs">{head}<tbody>{rows}</tbody></table></div>'
        )
    stamp = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %z")
    return L.page(
        "residuals \u2014 runs",
        "\n".join(body),
        generator=f"Index written {stamp}.",
        kind=INDEX_KIND,
    )


def write_index(root: str | os.PathLike) -> Path:
    """Regenerate ``root/index.html`` from the run folders under it; return its path."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / "index.html"
    L.atomic_write(path, index_html(root))
    return path


def _ours(page: Path) -> bool:
    try:
        with open(page, encoding="utf-8", errors="replace") as f:
            return f'content="residuals {INDEX_KIND}"' in f.read(4096)
    except OSError:
        return False


def refresh_indexes(folder: str | os.PathLike) -> list[Path]:
    """After a run or comparison in ``folder``: rewrite ``folder/index.html``, and the
    enclosing folder's index too when it holds one (``folder`` is then one of its groups,
    e.g. ``reports/examples/``). An index.html this module did not write is never touched."""
    folder = Path(folder)
    written = []
    for f, create in ((folder, True), (folder.parent, False)):
        page = f / "index.html"
        if (page.exists() and _ours(page)) or (create and not page.exists()):
            written.append(write_index(f))
    return written
