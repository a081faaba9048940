"""The HTML building blocks every report page shares: one stylesheet, tables, boxes.

Pages are *self-contained*: the stylesheet is inline, images are ``data:`` URIs,
there is no script and no external font, so a page works opened as a file,
served, or copied anywhere. Links to CSV files are relative and optional: the
page reads fine without them.

Everything that comes from data (headlines, captions, table cells, config
values) is escaped here; nothing a run writes can inject markup.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from residuals.runs.atomic import atomic_write

__all__ = [
    "page",
    "esc",
    "href",
    "prose",
    "verdict_box",
    "notice",
    "table_html",
    "format_table",
    "kv_table",
    "flatten",
    "display_path",
    "css_width",
    "png_data_uri",
    "fmt_value",
    "fmt_time",
    "fmt_duration",
    "parse_time",
    "atomic_write",
]

CSS = """
:root { color-scheme: light; --fg: #1d2126; --muted: #5b6470; --line: #d9dde3; --bg-soft: #f5f7f9;
  --ok: #1a7f37; --ok-bg: #e8f5ec; --bad: #c0262d; --bad-bg: #fdecec; --none: #59636e; --none-bg: #eef1f4;
  --warn: #8a5a00; --warn-bg: #fff6dc; --link: #0b5cad; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff; line-height: 1.5;
  font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1000px; margin: 0 auto; padding: 24px 20px 48px; }
h1 { font-size: 1.6rem; margin: 0 0 4px; line-height: 1.25; }
h2 { font-size: 1.25rem; margin: 36px 0 8px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 1.05rem; margin: 20px 0 6px; }
a { color: var(--link); }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.9em; }
code { background: var(--bg-soft); padding: 1px 4px; border-radius: 3px; }
.sub { color: var(--muted); margin: 0 0 16px; }
.verdict { border-radius: 8px; padding: 14px 18px; margin: 16px 0; font-size: 1.15rem; font-weight: 600;
  border-left: 6px solid; display: flex; gap: 12px; align-items: baseline; }
.verdict .mark { font-size: 1.3rem; }
.verdict .label { font-size: 0.8rem; font-weight: 700; text-transform: uppercase; letter-spacing: .04em; }
.verdict.ok { background: var(--ok-bg); border-color: var(--ok); color: #0f4d22; }
.verdict.bad { background: var(--bad-bg); border-color: var(--bad); color: #7a1217; }
.verdict.none { background: var(--none-bg); border-color: var(--none); color: #2f363d; }
.notice { background: var(--warn-bg); border: 1px solid #f0d48a; border-radius: 6px; padding: 10px 14px;
  margin: 12px 0; color: var(--warn); }
.notice.bad { background: var(--bad-bg); border-color: #f3b7b9; color: #7a1217; }
figure { margin: 20px 0 28px; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: 0.95rem; margin-top: 6px; }
.links { font-size: 0.85rem; }
.grid { display: grid; gap: 16px; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr)); }
.grid > div { min-width: 0; }
.grid.stack { grid-template-columns: 1fr; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 8px 0; font-size: 0.92rem; }
th, td { padding: 5px 10px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { background: var(--bg-soft); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.broken td { color: var(--bad); }
.status { font-size: 0.8rem; font-weight: 600; padding: 1px 6px; border-radius: 10px; white-space: nowrap; }
.status.complete { background: var(--ok-bg); color: var(--ok); }
.status.running, .status.interrupted { background: var(--warn-bg); color: var(--warn); }
.status.failed, .status.broken { background: var(--bad-bg); color: var(--bad); }
.dot { display: inline-block; width: 10px; height: 10px; border-radius: 50%; margin-right: 6px; }
.dot.ok { background: var(--ok); } .dot.bad { background: var(--bad); } .dot.none { background: #aab2bb; }
.reproduce { background: var(--bg-soft); border: 1px solid var(--line); border-radius: 6px; padding: 12px 16px; }
.reproduce pre { margin: 6px 0; white-space: pre-wrap; word-break: break-all; }
details { margin: 12px 0; border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px; }
details > summary { cursor: pointer; font-weight: 600; }
footer { color: var(--muted); font-size: 0.8rem; margin-top: 40px; }
@media (max-width: 640px) { main { padding: 14px 10px 32px; } h1 { font-size: 1.3rem; } }
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def href(relative: str | Path) -> str:
    """An escaped ``href`` value for a relative path: URL-quoted and prefixed with ``./``, so
    a folder or file named ``javascript:alert(1)`` is a path, never a scheme or a host."""
    from urllib.parse import quote

    posix = Path(relative).as_posix() if isinstance(relative, Path) else str(relative)
    if posix.startswith("/") or posix.startswith("\\"):
        raise ValueError(f"href: {posix!r} is not a relative path")
    parts = [quote(part, safe="") for part in posix.split("/")]
    text = "/".join(parts)
    return esc(text if text.startswith("../") else "./" + text)


_CODE = re.compile(r"`([^`]+)`")


def prose(text: str | None) -> str:
    """Plain text to HTML paragraphs: blank lines split paragraphs, `code` spans kept."""
    if not text:
        return ""
    paras = [p.strip() for p in re.split(r"\n\s*\n", str(text)) if p.strip()]
    return "".join("<p>" + _CODE.sub(r"<code>\1</code>", esc(p)) + "</p>" for p in paras)


def page(title: str, body: str, *, generator: str = "", kind: str = "report") -> str:
    """A complete, self-contained HTML document; ``kind`` is recorded in a generator meta tag."""
    foot = f"<footer>{esc(generator)}</footer>" if generator else ""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="generator" content="residuals {esc(kind)}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        # an empty icon: no favicon request, so no 404 in the console when served
        '<link rel="icon" href="data:,">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n"
        f"<body>\n<main>\n{body}\n{foot}\n</main>\n</body>\n</html>\n"
    )


VERDICT_CLASS = {
    True: ("ok", "\u2714", "reproduced / passed"),
    False: ("bad", "\u2718", "not reproduced / failed"),
    None: ("none", "\u25cb", "no verdict"),
}


def verdict_class(verdict: bool | None) -> str:
    return VERDICT_CLASS.get(verdict, VERDICT_CLASS[None])[0]


def verdict_box(headline: str, verdict: bool | None, *, label: str | None = None) -> str:
    cls, mark, default_label = VERDICT_CLASS.get(verdict, VERDICT_CLASS[None])
    label = default_label if label is None else label
    return (
        f'<div class="verdict {cls}" id="headline" role="status">'
        f'<span class="mark" aria-hidden="true">{mark}</span>'
        f'<div><div class="label">{label}</div><div class="text">{esc(headline)}</div></div></div>'
    )


def notice(text: str, *, bad: bool = False) -> str:
    return f'<div class="notice{" bad" if bad else ""}">{text}</div>'


# ------------------------------------------------------------------ numbers
def fmt_value(v: Any) -> str:
    """A cell value for people: 4 significant digits, integers exact, NaN as a dash."""
    if v is None:
        return "\u2013"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:d}"
    if isinstance(v, float):
        if math.isnan(v):
            return "\u2013"
        if v.is_integer() and abs(v) < 1e15:
            return f"{int(v):d}"
        return f"{v:.4g}"
    try:  # numpy scalars
        import numpy as np

        if isinstance(v, np.integer):
            return f"{int(v):d}"
        if isinstance(v, np.floating):
            return fmt_value(float(v))
    except ImportError:  # pragma: no cover
        pass
    return str(v)


def _pm(mean: Any, std: Any) -> str:
    m = fmt_value(float(mean)) if mean is not None and not pd.isna(mean) else "\u2013"
    if std is None or pd.isna(std):
        return m
    return f"{m} \u00b1 {float(std):.2g}"


def format_table(df: pd.DataFrame) -> pd.DataFrame:
    """Merge each ``<name>_mean`` / ``<name>_std`` column pair into one "mean ± std" column.

    The saved CSV keeps both columns; only the page shows them merged.
    """
    out = {}
    cols = list(df.columns)
    done = set()
    for c in cols:
        if c in done:
            continue
        name = str(c)
        if name.endswith("_mean") and f"{name[:-5]}_std" in df.columns:
            base, std_col = name[:-5], f"{name[:-5]}_std"
            out[f"{base} (mean \u00b1 std)"] = [_pm(m, s) for m, s in zip(df[c], df[std_col])]
            done.update({c, std_col})
        else:
            out[name] = [fmt_value(v) for v in df[c].tolist()]
            done.add(c)
    return pd.DataFrame(out, index=df.index)


def _is_numeric_text(s: str) -> bool:
    return bool(re.fullmatch(r"[-+]?[\d.,]+(e[-+]?\d+)?( \u00b1 [\d.e+-]+)?|\u2013", s))


def table_html(df: pd.DataFrame, *, formatted: bool = False, cls: str = "") -> str:
    """An escaped HTML table of a data frame (numbers right-aligned)."""
    shown = df if formatted else format_table(df)
    head = "".join(f"<th>{esc(c)}</th>" for c in shown.columns)
    rows = []
    for rec in shown.itertuples(index=False):
        cells = "".join(
            f'<td class="num">{esc(v)}</td>' if _is_numeric_text(str(v)) else f"<td>{esc(v)}</td>"
            for v in rec
        )
        rows.append(f"<tr>{cells}</tr>")
    return (
        f'<div class="scroll"><table class="{esc(cls)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted keys: {"a": {"b": 1}} -> {"a.b": 1}."""
    if not isinstance(d, dict):
        return {prefix or "value": d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def kv_table(items: dict[str, Any] | Iterable[tuple[str, Any]], *, cls: str = "") -> str:
    """A two-column key/value table (values escaped; lists shown comma-separated)."""
    pairs = items.items() if isinstance(items, dict) else items
    rows = []
    for k, v in pairs:
        if isinstance(v, (list, tuple)):
            v = ", ".join(map(str, v))
        rows.append(f"<tr><th>{esc(k)}</th><td>{esc(fmt_value(v))}</td></tr>")
    return f'<div class="scroll"><table class="{esc(cls)}"><tbody>{"".join(rows)}</tbody></table></div>'


# -------------------------------------------------------------------- time
def parse_time(s: Any) -> _dt.datetime | None:
    if not s:
        return None
    try:
        t = _dt.datetime.fromisoformat(str(s))
    except ValueError:
        return None
    return t if t.tzinfo else t.astimezone()


def fmt_time(s: Any) -> str:
    t = parse_time(s)
    return t.strftime("%Y-%m-%d %H:%M:%S %z") if t else "\u2013"


def fmt_duration(seconds: Any) -> str:
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        return "\u2013"
    if math.isnan(s):
        return "\u2013"
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m} min {sec:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


# ------------------------------------------------------------------- files
def display_path(path: Path) -> str:
    """A path as a user would type it: relative to the current folder when inside it."""
    import os

    p = Path(path).absolute()
    try:
        return p.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return os.fspath(p)


def css_width(fig) -> int:
    """The width in CSS px a matplotlib figure was designed for (inches x dpi)."""
    return int(round(fig.get_size_inches()[0] * fig.dpi))


def png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")
