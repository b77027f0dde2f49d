"""One self-contained HTML report of several figures: interactive, offline, with the settings.

plotly.js is embedded once, in the first figure; the others reuse it, so the file opens
without a network and stays a few megabytes.
"""
from __future__ import annotations

import html
import json
from typing import Mapping, Sequence

import plotly.graph_objects as go

__all__ = ["overview_html"]

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 0.85em; }
.figure { margin-bottom: 1.5em; }
"""


def overview_html(runs: Mapping[str, Mapping], figures: Sequence[tuple[str, go.Figure]],
                  title: str = "Dynamics Lab overview") -> str:
    """The figures, in order, with each run's settings and summary, as one HTML page.

    Args:
        runs: {run id: the run's settings as the store keeps them (name, data, model, train,
            summary, ...)}.
        figures: (heading, figure) pairs.
        title: the page's title.
    """
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    for run_id, settings in runs.items():
        name = settings.get("name", run_id)
        parts.append(f"<h2>Run: {html.escape(str(name))} ({html.escape(run_id)})</h2>")
        parts.append(f"<pre>{html.escape(json.dumps(settings, indent=2, sort_keys=True, default=str))}</pre>")
    for i, (heading, figure) in enumerate(figures):
        parts.append(f"<h2>{html.escape(heading)}</h2><div class='figure'>")
        parts.append(figure.to_html(full_html=False, include_plotlyjs=i == 0))
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)
