"""One run's self-contained HTML report, rebuilt from the run's saved tables.

:func:`build_report` is what a bench calls at the end of a run and what
``residuals report build RUN_DIR`` calls later (e.g. after a template change)::

    run_dir/figures/<key>.png   each figure, as drawn by the bench's renderer
    run_dir/figures/<key>.csv   the tidy data behind it (Figure.data)
    run_dir/tables/<key>.csv    each summary table
    run_dir/index.html          the page: images embedded as data: URIs, CSS inline
    run_dir/../index.html       the runs index of the parent folder, regenerated

The page, top to bottom: the headline verdict in a coloured box (green
reproduced/passed, red not, grey no verdict), the intro, the figures (title,
caption, a link to their CSV), the summary tables (mean +- std over seeds), a
"Reproduce" box with the command, and collapsible run details (config, package
versions, machine and device, git commit, start/end/wall time).

A run whose renderer cannot read its results (a run killed before it wrote
them, a deleted CSV) still gets a page: it says what is missing and keeps the
run details, so a broken run is visible rather than silently absent.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import NamedTuple

from residuals.report import layout as L
from residuals.report.content import ReportContent
from residuals.runs import BrokenRun, RunDir, RunInUse, get_renderer, now_iso

__all__ = ["build_report", "render_content", "save_figures", "write_tables"]

FIG_DPI_SCALE = 1.5  # PNGs at 1.5x the figure's DPI: sharp on high-density laptop screens


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("residuals")
    except metadata.PackageNotFoundError:  # pragma: no cover
        return "?"


def render_content(run: RunDir) -> ReportContent:
    """The bench's renderer applied to the run (matplotlib set to the shared style first).

    Raises :class:`BrokenRun` when the run cannot be rendered: unreadable meta.json,
    a bench with no registered renderer, or results the renderer needs are missing.
    """
    from residuals.report import style

    style.apply()
    meta = run.read_meta()
    try:
        renderer = get_renderer(meta["bench"])
    except (ValueError, ImportError, AttributeError) as e:  # unknown bench, or its module missing
        raise BrokenRun(f"{run.path}: cannot render: {e}") from e
    return renderer(run)


class SavedFigure(NamedTuple):
    key: str
    title: str
    caption: str
    uri: str  # data:image/png;base64,...
    width: int  # CSS px the figure was designed for (figsize * dpi)


def save_figures(content: ReportContent, folder: Path) -> list[SavedFigure]:
    """Write figures/<key>.png and figures/<key>.csv and close the figures, in order."""
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    seen = set()
    for f in content.figures:
        if f.key in seen:
            raise ValueError(
                f"two figures share the key {f.key!r}; keys name files and must be unique"
            )
        seen.add(f.key)
        png = folder / f"{f.key}.png"
        width = L.css_width(f.fig)
        f.fig.savefig(png, dpi=f.fig.dpi * FIG_DPI_SCALE, facecolor="white")
        plt.close(f.fig)
        f.data.to_csv(folder / f"{f.key}.csv", index=False)
        out.append(SavedFigure(f.key, f.title, f.caption, L.png_data_uri(png), width))
    return out


def write_tables(content: ReportContent, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for t in content.tables:
        t.data.to_csv(folder / f"{t.key}.csv", index=False)


def _remove_stale(folder: Path, keep: set[str]) -> None:
    """Drop figures/tables a previous build wrote but this one did not (e.g. a renamed figure)."""
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        if p.suffix in (".png", ".csv") and p.stem not in keep:
            p.unlink()


# ----------------------------------------------------------------- sections
def _section(meta: dict, key: str) -> dict:
    """A dict-valued meta.json field, or {} when it is missing or not a dict."""
    value = meta.get(key)
    return value if isinstance(value, dict) else {}


# meta.json fields shown in their own places; any other field a bench records is listed too
_SHOWN = {
    "bench",
    "dataset",
    "config",
    "command",
    "started_at",
    "finished_at",
    "wall_s",
    "status",
    "headline",
    "verdict",
    "summary",
    "versions",
    "machine",
    "git_commit",
    "report_built_at",
    "report_problem",
}


def device_label(meta: dict) -> str:
    machine = _section(meta, "machine")
    device = machine.get("device") or "cpu"
    gpu = machine.get("gpu")
    return f"{device} ({gpu})" if gpu else str(device)


def _status_notice(meta: dict) -> str:
    status = meta.get("status")
    if status == "complete":
        return ""
    if status == "running":
        text = (
            "This run has no end time: it is still running, or it was killed before it finished. "
            "The page shows the results saved so far."
        )
    elif status == "interrupted":
        text = (
            "This run was interrupted before it finished. The page shows the results saved so far."
        )
    elif status == "failed":
        text = "This run failed. The page shows the results saved before the failure."
    else:
        text = f"This run's status is {status!r}."
    html = L.esc(text)
    if meta.get("error"):
        html += f"<br>Error: <code>{L.esc(meta['error'])}</code>"
    if meta.get("resume_command"):
        html += f"<br>Continue it with: <code>{L.esc(meta['resume_command'])}</code>"
    return L.notice(html, bad=status == "failed")


def _figures_html(figs: list[SavedFigure]) -> str:
    parts = []
    for key, title, caption, uri, width in figs:
        parts.append(
            f'<figure id="fig-{L.esc(key)}"><h3>{L.esc(title)}</h3>'
            f'<img src="{uri}" alt="{L.esc(title)}" width="{width}">'
            f"<figcaption>{L.esc(caption)} "
            f'<span class="links"><a href="{L.href(f"figures/{key}.csv")}">data (CSV)</a></span>'
            f"</figcaption></figure>"
        )
    return "".join(parts)


def _tables_html(content: ReportContent) -> str:
    parts = []
    for t in content.tables:
        parts.append(
            f'<section class="table" id="table-{L.esc(t.key)}"><h3>{L.esc(t.title)}</h3>'
            f"{L.table_html(t.data)}"
            f'<p class="sub">{L.esc(t.caption)} '
            f'<span class="links"><a href="{L.href(f"tables/{t.key}.csv")}">data (CSV)</a></span></p></section>'
        )
    return "".join(parts)


def _build_command(run: RunDir) -> str:
    """`residuals report build NAME` under the default root, else with the folder's path."""
    import shlex

    from residuals.runs import DEFAULT_ROOT

    if run.path.absolute().parent == DEFAULT_ROOT.absolute():
        return f"residuals report build {shlex.quote(run.path.name)}"
    return f"residuals report build {shlex.quote(L.display_path(run.path))}"


# options that only say where files go or come from on the machine that ran: left out of the
# Reproduce box, so it reads the same on every machine (the details keep the recorded command)
PLACE_OPTIONS = ("--out", "--data-dir", "--name", "--root")


def reproduce_command(command: str | None) -> str:
    """The recorded command line without :data:`PLACE_OPTIONS` (``--out /tmp/x`` and the
    like): what anyone can run from a checkout to get the same results."""
    import shlex

    if not command:
        return "(not recorded)"
    try:
        words = shlex.split(command)
    except ValueError:  # unbalanced quotes: show it as recorded
        return command
    kept, skip = [], False
    for w in words:
        if skip:
            skip = False
            continue
        name = w.split("=", 1)[0]
        if name in PLACE_OPTIONS:
            skip = "=" not in w
            continue
        kept.append(w)
    return shlex.join(kept)


def reproduce_html(meta: dict, run: RunDir) -> str:
    command = reproduce_command(meta.get("command"))
    return (
        '<h2 id="reproduce">Reproduce</h2><div class="reproduce">'
        "<div>Re-run the experiment:</div>"
        f'<pre id="command">{L.esc(command)}</pre>'
        f"<div>Rebuild this page from the saved results, without retraining:</div>"
        f"<pre>{L.esc(_build_command(run))}</pre></div>"
    )


def details_html(meta: dict, run: RunDir) -> str:
    """Collapsible run details: times, config, versions, machine, git commit, files."""
    when = {
        "bench": meta.get("bench"),
        "dataset": meta.get("dataset"),
        "status": meta.get("status"),
        "started": L.fmt_time(meta.get("started_at")),
        "finished": L.fmt_time(meta.get("finished_at")),
        "wall time": L.fmt_duration(meta.get("wall_s")),
        "device": device_label(meta),
        "git commit": meta.get("git_commit") or "(not a git checkout)",
        "run folder": run.path.name,
        "recorded command": meta.get("command"),
        **{k: v for k, v in meta.items() if k not in _SHOWN and not isinstance(v, dict)},
    }
    files = sorted(p.name for p in run.path.glob("*.csv")) + ["meta.json"]
    links = " ".join(f'<a href="{L.href(n)}">{L.esc(n)}</a>' for n in files)
    return (
        '<details id="details"><summary>Run details: config, versions, machine, times</summary>'
        f"<h3>Run</h3>{L.kv_table(when, cls='meta')}"
        f"<h3>Config</h3>{L.kv_table(L.flatten(_section(meta, 'config')), cls='config')}"
        f"<h3>Package versions</h3>{L.kv_table(_section(meta, 'versions'), cls='versions')}"
        f"<h3>Machine</h3>{L.kv_table(_section(meta, 'machine'), cls='machine')}"
        f'<h3>Files</h3><p class="links">{links}</p></details>'
    )


def _page(run: RunDir, meta: dict, content: ReportContent | None, figs, problem: str | None) -> str:
    bench, dataset = meta.get("bench", "?"), meta.get("dataset", "?")
    title = f"{bench} \u00b7 {dataset}"
    sub = (
        f"{L.esc(L.fmt_time(meta.get('started_at')))} \u00b7 {L.esc(device_label(meta))} \u00b7 "
        f"wall time {L.esc(L.fmt_duration(meta.get('wall_s')))} \u00b7 "
        f'<span class="status {L.esc(meta.get("status"))}">{L.esc(meta.get("status"))}</span>'
    )
    body = [f'<header><h1>{L.esc(title)}</h1><p class="sub">{sub}</p></header>']
    if problem is not None:
        body.append(L.verdict_box("No results to report: " + problem, None))
        body.append(
            L.notice(
                "This run folder is incomplete, so there is nothing to plot. Re-run the command "
                "below, or rebuild once the missing files are back.",
                bad=True,
            )
        )
    else:
        assert content is not None  # a renderer either returns content or names a problem
        body.append(L.verdict_box(content.headline, content.verdict))
    body.append(_status_notice(meta))
    if content is not None:
        body.append(L.prose(content.intro))
        if figs:
            body.append('<h2 id="figures">Figures</h2>' + _figures_html(figs))
        if content.tables:
            body.append('<h2 id="tables">Tables</h2>' + _tables_html(content))
    body.append(reproduce_html(meta, run))
    body.append(details_html(meta, run))
    gen = (
        f"Built by residuals {_version()} on {L.fmt_time(now_iso())} from the run's saved results."
    )
    return L.page(
        f"{title} \u2014 residuals report", "\n".join(b for b in body if b), generator=gen
    )


# --------------------------------------------------------------------- build
def build_report(run_dir: str | os.PathLike, *, update_index: bool = True) -> Path:
    """Render the run's saved results into ``run_dir/index.html``; return that path.

    Raises :class:`BrokenRun` when the folder has no readable meta.json (there is
    nothing to title the page with). A run whose results are missing gets a page
    that says so; its problem is recorded in meta.json as ``report_problem``.
    Unless ``update_index`` is False, the parent folder's runs index is rewritten
    (see :func:`residuals.report.index.refresh_indexes`).
    """
    run = RunDir(run_dir)
    meta = run.read_meta()
    lock = run.lock()
    try:  # a run still being worked on by another process: its page, but not its meta.json
        lock.acquire()
    except RunInUse:
        pass
    try:
        content: ReportContent | None = None
        figs: list = []
        problem: str | None = None
        try:
            content = render_content(run)
        except BrokenRun as e:
            problem = str(e).removeprefix(f"{run.path}: ")
        if content is not None:
            figs = save_figures(content, run.figures_dir)
            write_tables(content, run.path / "tables")
            _remove_stale(run.figures_dir, {f.key for f in figs})
            _remove_stale(run.path / "tables", {t.key for t in content.tables})
        L.atomic_write(run.html_path, _page(run, meta, content, figs, problem))

        changes: dict[str, object] = {
            "report_built_at": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "report_problem": problem,
        }
        if content is not None:
            changes.update(
                headline=content.headline, verdict=content.verdict, summary=content.summary
            )
        if lock.held:  # meta.json is the working process's to update while it runs
            run.update_meta(**changes)
    finally:
        lock.release()

    if update_index:
        from residuals.report.index import refresh_indexes

        refresh_indexes(run.path.parent)
    return run.html_path
