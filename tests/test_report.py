"""The shared HTML report builder writes one self-contained file."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from pcapvision.report import HtmlReport  # noqa: E402


def test_report_embeds_figures_and_escapes_text(tmp_path):
    report = HtmlReport("Title <1>")
    report.heading("Section & more")
    report.note("baseline is close")
    report.table(pd.DataFrame({"model": ["cnn", "majority"], "accuracy": [0.91234, 0.5]}), caption="Scores")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    report.figure(fig, caption="a line")
    path = report.save(tmp_path / "r.html")
    html = path.read_text()
    assert "Title &lt;1&gt;" in html and "Section &amp; more" in html
    assert "data:image/png;base64," in html
    assert "<td>0.9123</td>" in html and "<caption>Scores</caption>" in html
    assert "src=\"http" not in html  # nothing fetched from elsewhere
    assert plt.get_fignums() == []  # figures are closed once embedded


def test_empty_table_says_so(tmp_path):
    report = HtmlReport("t")
    report.table([])
    assert "(no rows)" in report.render()
