"""Lazy versus rich: the measures of several runs on shared axes, and the phase diagram.

Every figure takes `{run name: LazyMeasures}` so that two to four runs compare on the same
axes, one colour per run throughout the page.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from engine.results import LazyMeasures
from viz.style import REFERENCE_COLOR, SEQUENTIAL_SCALE, axis_scale, base_layout, class_color, no_data, selected_customdata

__all__ = ["measures_figure", "last_finite", "deciding_figure", "layer_change_figure", "twin_figure", "phase_heatmap",
           "selected_cell", "regime_line", "MEASURES"]

DECIDING_HEIGHT = 230  # pixels: a compact row, so that it sits right under the lesson's text

# (field of LazyMeasures, panel title, formula shown on hover, log scale)
MEASURES = [
    ("weight_change", "Relative weight change", "||w_t - w_0|| / ||w_0||", True),
    ("kernel_distance", "Kernel distance from init", "1 - <K_0, K_t> / (||K_0|| ||K_t||)", False),
    ("kernel_speed", "Kernel velocity (per 1,000 steps)", "||K_t - K_prev|| / ||K_prev|| per 1,000 steps", True),
    ("alignment", "Kernel-target alignment", "<HKH, HYY'H> / (||HKH|| ||HYY'H||)", False),
    ("cka_to_init", "CKA of the last hidden layer to init", "linear CKA(H_t, H_0)", False),
    ("effective_rank", "Effective rank of the last hidden layer", "exp(entropy of the normalised singular values)", False),
    ("twin_gap", "Gap to the linearized twin", "||f - f_lin|| / ||f - f_0||", True),
]


def _shown(measures: Mapping[str, LazyMeasures]) -> list[tuple]:
    """The measures at least one run has (the twin's only when a run trained one)."""
    return [m for m in MEASURES
            if any(getattr(r, m[0]) is not None and np.isfinite(getattr(r, m[0])).any() for r in measures.values())]


def measures_figure(measures: Mapping[str, LazyMeasures], *, columns: int = 3,
                    title: Optional[str] = None) -> go.Figure:
    """Each lazy/rich measure over training in its own panel, every run on the same axes.

    Args:
        measures: {run name: its measures}; one colour per run, in order.
        columns: panels per row.
    """
    shown = _shown(measures)
    if not shown:
        return no_data(base_layout(go.Figure(), title), "no measures yet")
    rows = -(-len(shown) // columns)
    fig = make_subplots(rows=rows, cols=columns, subplot_titles=[m[1] for m in shown],
                        horizontal_spacing=0.08, vertical_spacing=0.16)
    for i, (name, result) in enumerate(measures.items()):
        for j, (field, label, formula, log) in enumerate(shown):
            values = getattr(result, field)
            if values is None:
                continue
            fig.add_trace(go.Scatter(
                x=result.steps, y=values, name=name, legendgroup=name, showlegend=j == 0,
                mode="lines+markers", marker={"size": 4}, line={"color": class_color(i)},
                hovertemplate=f"{name}<br>step %{{x}}<br>{formula} = %{{y:.4g}}<extra></extra>"),
                row=j // columns + 1, col=j % columns + 1)
            if log:
                fig.update_yaxes(**axis_scale(True), row=j // columns + 1, col=j % columns + 1)
    fig.update_xaxes(title_text="step", row=rows)
    return base_layout(fig, title, height=270 * rows + 60)


# The measures that tell lazy from rich at a glance: the first thing a lesson's results show.
DECIDING = ("weight_change", "kernel_distance", "twin_gap")


def last_finite(values) -> float:
    """The latest finite value of a series (the newest checkpoint of a run still training); NaN if none."""
    values = np.asarray(values if values is not None else [], dtype=float)
    finite = values[np.isfinite(values)]
    return float(finite[-1]) if finite.size else float("nan")


def deciding_figure(measures: Mapping[str, LazyMeasures], *, fields: Sequence[str] = DECIDING,
                    title: Optional[str] = None) -> go.Figure:
    """The latest value of each deciding measure, runs side by side (one bar each, the value
    written on it): e.g. a weight change of 1 against 0.1 against 0.01 reads at once.

    Args:
        measures: {run name: its measures}; the colours of `measures_figure`.
        fields: the LazyMeasures fields to show, one panel each (those no run has are left out).
    """
    shown = [m for m in _shown(measures) if m[0] in fields]
    if not shown:
        return no_data(base_layout(go.Figure(), title, height=DECIDING_HEIGHT), "no measures yet")
    fig = make_subplots(rows=1, cols=len(shown), subplot_titles=[m[1] for m in shown], horizontal_spacing=0.08)
    names = list(measures)
    for j, (field, label, formula, log) in enumerate(shown, start=1):
        values = [last_finite(getattr(result, field)) for result in measures.values()]
        fig.add_trace(go.Bar(
            x=names, y=values, marker={"color": [class_color(i) for i in range(len(names))]},
            text=[f"{v:.2g}" if np.isfinite(v) else "" for v in values], textposition="outside",
            cliponaxis=False, showlegend=False, name=label,
            hovertemplate=f"%{{x}}<br>{formula} = %{{y:.4g}}<extra></extra>"), row=1, col=j)
        fig.update_yaxes(**axis_scale(log), showticklabels=False, row=1, col=j)
    return base_layout(fig, title, height=DECIDING_HEIGHT)


def layer_change_figure(measures: Mapping[str, LazyMeasures], *, title: Optional[str] = None) -> go.Figure:
    """Each layer's relative weight change at the end of training, runs side by side (bars)."""
    fig = go.Figure()
    for i, (name, result) in enumerate(measures.items()):
        fig.add_trace(go.Bar(x=list(result.layers), y=result.layer_weight_change[-1], name=name,
                             marker={"color": class_color(i)},
                             hovertemplate=f"{name}<br>%{{x}}: %{{y:.3g}}<extra></extra>"))
    fig.update_yaxes(title_text="||w_t - w_0|| / ||w_0||", **axis_scale(True))
    fig.update_layout(barmode="group")
    return base_layout(fig, title)


def twin_figure(measures: Mapping[str, LazyMeasures], *, title: Optional[str] = None) -> go.Figure:
    """Training loss of each network (solid) and of its linearized twin (dashed)."""
    fig = go.Figure()
    for i, (name, result) in enumerate(measures.items()):
        if result.twin_loss is None:
            continue
        fig.add_trace(go.Scatter(x=result.steps, y=result.loss, name=f"{name}: network",
                                 line={"color": class_color(i)}, mode="lines+markers", marker={"size": 4}))
        fig.add_trace(go.Scatter(x=result.steps, y=result.twin_loss, name=f"{name}: linearized",
                                 line={"color": class_color(i), "dash": "dash"}, mode="lines"))
    if not fig.data:
        return no_data(base_layout(fig, title), "no linearized twin in these runs")
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text="training loss", **axis_scale(True))
    return base_layout(fig, title)


def phase_heatmap(values: np.ndarray, alphas: Sequence[float], widths: Sequence[int], *, label: str,
                  log: bool = False, title: Optional[str] = None) -> go.Figure:
    """One measure of a sweep over output scale alpha (columns) and width (rows), seeds averaged.

    Args:
        values: (A, W, S) the measure per alpha, width and seed.
        label: what the values are (the colour bar's title).
        log: colour by log10 of the values.
    """
    mean = np.nanmean(np.asarray(values, dtype=float), axis=-1).T  # (W, A)
    shown = np.log10(np.where(mean > 0, mean, np.nan)) if log else mean
    x = [f"{a:g}" for a in alphas]
    y = [str(w) for w in widths]
    fig = go.Figure(go.Heatmap(
        z=shown, x=x, y=y, colorscale=SEQUENTIAL_SCALE, customdata=mean,
        colorbar={"title": {"text": f"log10 {label}" if log else label, "side": "right"}},
        hovertemplate="alpha %{x}<br>width %{y}<br>" + label + " = %{customdata:.4g}<extra></extra>"))
    # Invisible markers on the cells: plotly selects points, not heatmap cells, so these carry
    # each cell's (alpha index, width index) for a click to open the cell's run.
    cells = [(i, j) for j in range(len(widths)) for i in range(len(alphas))]
    fig.add_trace(go.Scatter(x=[x[i] for i, _ in cells], y=[y[j] for _, j in cells], mode="markers",
                             customdata=cells, hoverinfo="skip", showlegend=False,
                             marker={"size": 28, "symbol": "square", "color": "rgba(0,0,0,0)"}))
    fig.update_xaxes(title_text="output scale alpha", type="category")
    fig.update_yaxes(title_text="width", type="category")
    fig.update_layout(clickmode="event+select", dragmode=False)
    return base_layout(fig, title)


def selected_cell(selection: Mapping | None) -> Optional[tuple[int, int]]:
    """The (alpha index, width index) of the cell a user clicked on a `phase_heatmap`, or None.

    Args:
        selection: Streamlit's selection state of the chart (the event or its `selection`).
    """
    for data in selected_customdata(selection):
        if isinstance(data, (list, tuple)) and len(data) == 2:
            return int(data[0]), int(data[1])
    return None


def regime_line(fig: go.Figure, text: str) -> go.Figure:
    """A note under a figure (e.g. which corner is lazy)."""
    fig.add_annotation(text=text, x=0, y=-0.25, xref="paper", yref="paper", showarrow=False,
                       font={"color": REFERENCE_COLOR}, xanchor="left")
    return fig
