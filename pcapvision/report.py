"""The one self-contained HTML report builder (figures embedded as PNG data URIs).

Used by classify and robustness::

    report = HtmlReport("Model report")
    report.heading("Training")
    report.figure(fig, caption="Loss per epoch")
    report.table(rows, caption="Baselines")
    report.save(out_dir / "report.html")
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pcapvision.io import write_text_atomic

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;
color:#222;line-height:1.45;padding:0 1rem}
h1{border-bottom:2px solid #444;padding-bottom:.3rem}h2{margin-top:2.2rem;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.8rem 0;font-size:.92rem}
th,td{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}th{background:#f2f2f2}
td:first-child,th:first-child{text-align:left}
figure{margin:1rem 0}figcaption{color:#555;font-size:.9rem}
img{max-width:100%}.note{background:#fff6d6;border-left:4px solid #e0b000;padding:.5rem .8rem}
.bad{background:#fde2e2;border-left:4px solid #c00;padding:.5rem .8rem}
code,pre{background:#f6f6f6;padding:.1rem .3rem}pre{padding:.6rem;overflow-x:auto}
"""


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


class HtmlReport:
    """Accumulates sections and writes one HTML file with everything embedded."""

    def __init__(self, title: str) -> None:
        self.title = title
        self._parts: list[str] = []

    def heading(self, text: str, level: int = 2) -> None:
        self._parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def paragraph(self, text: str, css_class: str | None = None) -> None:
        cls = f' class="{css_class}"' if css_class else ""
        self._parts.append(f"<p{cls}>{html.escape(text)}</p>")

    def note(self, text: str) -> None:
        """A highlighted remark (e.g. 'a trivial baseline is within 2 points of the CNN')."""
        self.paragraph(text, "note")

    def warning(self, text: str) -> None:
        self.paragraph(text, "bad")

    def preformatted(self, text: str) -> None:
        self._parts.append(f"<pre>{html.escape(text)}</pre>")

    def table(self, rows: Sequence[Mapping[str, Any]] | Any, caption: str | None = None) -> None:
        """A table from a list of dicts or a pandas DataFrame."""
        if hasattr(rows, "to_dict"):
            rows = rows.to_dict(orient="records")
        rows = list(rows)
        if not rows:
            self.paragraph("(no rows)")
            return
        columns: list[str] = []
        for row in rows:
            columns.extend(k for k in row if k not in columns)
        out = ["<table>"]
        if caption:
            out.append(f"<caption>{html.escape(caption)}</caption>")
        out.append("<tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in columns) + "</tr>")
        for row in rows:
            out.append("<tr>" + "".join(f"<td>{_cell(row.get(c, ''))}</td>" for c in columns) + "</tr>")
        out.append("</table>")
        self._parts.append("".join(out))

    def figure(self, fig: Any, caption: str | None = None, dpi: int = 110) -> None:
        """Embed a matplotlib figure as a PNG and close it."""
        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        plt.close(fig)
        self.image_png(buf.getvalue(), caption)

    def image_png(self, png: bytes, caption: str | None = None) -> None:
        data = base64.b64encode(png).decode("ascii")
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self._parts.append(f'<figure><img alt="{html.escape(caption or "")}" src="data:image/png;base64,{data}">{cap}</figure>')

    def render(self) -> str:
        body = "\n".join(self._parts)
        return (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(self.title)}</title><style>{_STYLE}</style></head>"
            f"<body><h1>{html.escape(self.title)}</h1>\n{body}\n</body></html>\n"
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the report atomically."""
        return write_text_atomic(path, self.render())
