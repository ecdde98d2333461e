"""Building blocks of the self-contained HTML reports: inline CSS, table and figure snippets.

Shared by :mod:`litomo.report.html` (Li-mapping and microstructure pages),
:mod:`litomo.report.micro`, :mod:`litomo.report.map2d` and :mod:`litomo.report.phase`; kept
apart from the page builders so that those import it, not each other.

Examples
--------
>>> fmt(float("nan")), fmt(0.123456789), fmt(3.0)
('–', '0.1235', '3')
>>> esc("<a&b>")
'&lt;a&amp;b&gt;'
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from litomo.io.rundir import RunLayout

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1150px;margin:1.5em auto;
padding:0 1em;color:#1d1d1f;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
.meta{color:#555;font-size:.9em}.glance{background:#eef5fb;border-left:4px solid #2c7bb6;padding:.7em 1em}
.warning{background:#fff4e0;border-left:4px solid #e08a00;padding:.4em .8em;margin:.3em 0}
.note{color:#666;font-style:italic}
figure{margin:1.2em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.92em;color:#333;margin-top:.3em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0;display:block;overflow-x:auto}
th,td{border:1px solid #ddd;padding:.25em .55em;text-align:right;white-space:nowrap}
th{background:#f3f3f3}td.txt,th.txt{text-align:left}
tr.bad td{background:#fde2e1}code{font-size:.9em;word-break:break-all}
nav a{margin-right:1em}
"""


# --------------------------------------------------------------------------- small helpers


def fmt(value: Any, digits: int = 4) -> str:
    """A table cell: numbers to ``digits`` significant digits, NaN/None as an en dash."""
    if value is None:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return "–"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if v == int(v) and abs(v) < 1e6:
            return str(int(v))
        return f"{v:.{digits}g}"
    return str(value)


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def html_table(df: pd.DataFrame, *, bad_rows: Iterable[bool] | None = None, digits: int = 4) -> str:
    """An HTML table of ``df``; rows flagged in ``bad_rows`` get ``class="bad"`` (red)."""
    bad = list(bad_rows) if bad_rows is not None else [False] * len(df)
    num = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in df.columns]
    head = "".join(f'<th class="{"" if n else "txt"}">{esc(c)}</th>' for c, n in zip(df.columns, num, strict=True))
    rows = []
    for flag, (_, r) in zip(bad, df.iterrows(), strict=True):
        cells = "".join(f'<td class="{"" if n else "txt"}">{esc(fmt(v, digits))}</td>'
                        for v, n in zip(r.to_numpy(), num, strict=True))
        tr = '<tr class="bad">' if flag else "<tr>"
        rows.append(f"{tr}{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def dict_table(d: dict[str, Any], key: str = "name", value: str = "value") -> str:
    rows = "".join(f'<tr><td class="txt">{esc(k)}</td><td class="txt"><code>{esc(short_value(v))}</code></td></tr>'
                   for k, v in d.items())
    return f'<table><thead><tr><th class="txt">{esc(key)}</th><th class="txt">{esc(value)}</th></tr></thead><tbody>{rows}</tbody></table>'


def short_value(v: Any) -> str:
    """A compact one-line rendering of a parameter value (floats to 6 digits, lists inline, dicts as JSON)."""
    if isinstance(v, float):
        return fmt(v, 6)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(short_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return json.dumps(v, default=str)
    return str(v)


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_html(png: bytes, caption: str, alt: str) -> str:
    return (f'<figure><img src="{png_data_uri(png)}" alt="{esc(alt)}">'
            f"<figcaption>{caption}</figcaption></figure>")


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def figure_gallery(run_dir: Path, order: Sequence[str], captions: dict[str, str], command: str,
                   progress: Any = None) -> list[str]:
    """The run's ``figures/*.png`` as captioned HTML figures: ``order`` first, then any others.

    ``command`` names the command in the note shown when there is no figure; ``progress`` is
    called as ``progress(done, total, "report figures")``.
    """
    fdir = RunLayout(run_dir).figures
    pngs = {p.stem: p for p in sorted(fdir.glob("*.png"))} if fdir.is_dir() else {}
    ordered = [n for n in order if n in pngs] + [n for n in pngs if n not in order]
    if not ordered:
        return [note(f"No figures under figures/ (was `{command}` run with --no-figures?).")]
    out = []
    for k, name in enumerate(ordered, start=1):
        out.append(figure_html(pngs[name].read_bytes(), esc(captions.get(name, name.replace("_", " "))), name))
        if progress is not None:
            progress(k, len(ordered), "report figures")
    return out


def notes_html(notes: Sequence[str]) -> list[str]:
    """The list of missing or unreadable inputs of a report (nothing when there is none)."""
    if not notes:
        return []
    return ["<h3>Missing or unreadable inputs of this report</h3><ul>"
            + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>"]


def read_table(run_dir: Path, name: str, notes: list[str] | None = None) -> pd.DataFrame | None:
    """``run_dir/tables/<name>.csv`` as a DataFrame, or None (with a note) if absent or empty."""
    path = RunLayout(run_dir).table(name)
    why = None
    if not path.is_file():
        why = "not found"
    else:
        try:
            df = pd.read_csv(path)
        except pd.errors.EmptyDataError:
            why = "empty"
        except (OSError, pd.errors.ParserError) as exc:
            why = f"unreadable ({exc})"
        else:
            if len(df):
                return df
            why = "empty"
    if notes is not None:
        notes.append(f"tables/{name}.csv {why}")
    return None


def html_page(title: str, subtitle: str, body: Sequence[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{esc(title)}</h1><p class=\"meta\">{subtitle}</p>" + "\n".join(body) + "</body></html>\n")
