"""The overview's HTML report: self-contained, every figure, the settings escaped."""
import plotly.graph_objects as go

from viz.report import overview_html


def figures(n=3):
    return [(f"figure {i}", go.Figure(go.Scatter(x=[0, 1], y=[i, i + 1]))) for i in range(n)]


def test_the_report_embeds_plotly_once_and_draws_every_figure():
    page = overview_html({"abc": {"name": "run"}}, figures(3))
    assert page.count("Plotly.newPlot") == 3
    assert page.count("plotly.js v") == 1  # the library's banner, embedded once
    assert "<script src=\"http" not in page  # nothing to fetch: opens offline


def test_the_report_escapes_the_runs_names_and_settings():
    page = overview_html({"abc": {"name": "<script>alert(1)</script>", "train": {"lr": 0.1}}}, figures(1))
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page
    assert "&quot;lr&quot;: 0.1" in page
