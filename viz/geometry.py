"""Representation geometry: embeddings, CKA heatmaps, RDMs, collapse and rank over training,
matched units. Builders take the plain results of engine.results and return plotly figures.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from engine.results import Embedding, GeometryCurves, RDMSet, SimilarityMatrix, UnitMatch
from viz.style import (
    OUTLINE_COLOR, REFERENCE_COLOR, SEQUENTIAL_SCALE, base_layout, class_color, equal_aspect,
    no_data, scatter_trace, value_color_axis,
)

POINT_SIZE = 6
POINT_SIZE_3D = 3
ANNOTATE_CELLS = 144  # heatmaps with at most this many cells print their values
BAR_LIMIT = 64  # a single matching of at most this many units is drawn as bars

# measure -> (readable title, log y axis)
MEASURES = {
    "nc1": ("NC1: within / between class variability", True),
    "nc2_norm": ("NC2: class-mean norms, CV", False),
    "nc2_angle": ("NC2: distance from equal angles", False),
    "nc3": ("NC3: classifier vs class means", False),
    "nc4": ("NC4: disagreement with nearest mean", False),
    "effective_rank": ("effective rank", False),
    "participation_ratio": ("participation ratio", False),
}
AXIS_NAMES = {"pca": "PC", "umap": "UMAP "}


# ---- embeddings ------------------------------------------------------------------------------


def _marker_trace(points: np.ndarray, hover, n_total: int, **kwargs):
    """A scatter of (n, 2) or (n, 3) points; WebGL above the threshold in 2-D."""
    text = None if hover is None else list(np.asarray(hover, dtype=str))
    coordinates = "x+y+z" if points.shape[1] == 3 else "x+y"
    common = {"mode": "markers", "hovertext": text,
              "hoverinfo": "text+name" if text is not None else f"{coordinates}+name"}
    if points.shape[1] == 3:
        return go.Scatter3d(x=points[:, 0], y=points[:, 1], z=points[:, 2], **common, **kwargs)
    return scatter_trace(n_total, x=points[:, 0], y=points[:, 1], **common, **kwargs)


def _class_traces(view: Embedding, points: np.ndarray, size: int) -> list:
    """One trace per class present, in the palette colour, so the legend toggles classes."""
    labels = np.asarray(view.values).astype(int)
    hover = None if view.hover is None else np.asarray(view.hover, dtype=str)
    traces = []
    for k in np.unique(labels):
        mine = labels == k
        name = view.class_names[k] if view.class_names and k < len(view.class_names) else f"class {k}"
        traces.append(_marker_trace(
            points[mine], None if hover is None else hover[mine], len(points), name=str(name),
            marker={"color": class_color(k), "size": size, "line": {"color": OUTLINE_COLOR, "width": 0.5}},
        ))
    return traces


def _value_trace(view: Embedding, points: np.ndarray, size: int):
    """All points in one trace, coloured by a real value on the shared colour axis."""
    return _marker_trace(
        points, view.hover, len(points), name=view.value_name,
        marker={"color": np.asarray(view.values, dtype=float), "coloraxis": "coloraxis", "size": size},
    )


def embedding_scatter(view: Embedding, *, title: str | None = None,
                      bounds: np.ndarray | None = None, height: int = 460) -> go.Figure:
    """The samples as points of a 2-D or 3-D embedding, coloured by class or by a value.

    Args:
        view: the points, their colours and hover text.
        title: the figure's title.
        bounds: (dim, 2) axis ranges, to keep the axes still across frames of an animation
            or checkpoints (2-D and 3-D); None to fit the points.
        height: in pixels.
    """
    points = np.asarray(view.points, dtype=float)
    fig = go.Figure()
    if len(points) == 0:
        return base_layout(no_data(fig), title, height)
    dim = points.shape[1]
    size = POINT_SIZE_3D if dim == 3 else POINT_SIZE
    if view.categorical:
        fig.add_traces(_class_traces(view, points, size))
    else:
        fig.add_trace(_value_trace(view, points, size))
        axis = value_color_axis(view.values)
        fig.update_layout(coloraxis={**axis, "colorbar": {"title": {"text": view.value_name}}})
    names = [f"{AXIS_NAMES.get(view.method, view.method + ' ')}{i + 1}" for i in range(dim)]
    if dim == 3:
        scene = {f"{axis}axis": {"title": {"text": name}} for axis, name in zip("xyz", names)}
        scene["aspectmode"] = "data"  # one unit as long on every axis
        if bounds is not None:
            bounds = np.asarray(bounds, dtype=float)
            lengths = bounds[:, 1] - bounds[:, 0]
            for axis, (low, high), length in zip("xyz", bounds, lengths):
                scene[f"{axis}axis"]["range"] = [float(low), float(high)]
            scene["aspectmode"] = "manual"  # the same, for the fixed ranges
            scene["aspectratio"] = dict(zip("xyz", (lengths / lengths.max()).tolist()))
        fig.update_layout(scene=scene)
    else:
        equal_aspect(fig, x_title=names[0], y_title=names[1])
        if bounds is not None:
            bounds = np.asarray(bounds, dtype=float)
            fig.update_xaxes(range=bounds[0].tolist())
            fig.update_yaxes(range=bounds[1].tolist())
    return base_layout(fig, title, height)


def shared_bounds(frames: Sequence[np.ndarray], margin: float = 0.05) -> np.ndarray:
    """(dim, 2) axis ranges that hold every frame's points, with a margin on each side.

    Args:
        frames: (N, dim) arrays, e.g. the frames of engine.geometry.aligned_embed.
        margin: the fraction of each range added on both sides.
    """
    stacked = np.concatenate([np.asarray(f, dtype=float) for f in frames])
    low, high = np.nanmin(stacked, axis=0), np.nanmax(stacked, axis=0)
    pad = margin * np.where(high > low, high - low, 1.0)
    return np.stack([low - pad, high + pad], axis=1)


# ---- similarity matrices ---------------------------------------------------------------------


def _unit_interval_axis(*arrays: np.ndarray) -> dict:
    """A sequential scale fixed to [0, 1] for similarities that live there (CKA, RSA), so that
    figures compare; falls back to the shared value axis when values leave it."""
    values = np.concatenate([np.asarray(a, dtype=float).ravel() for a in arrays])
    values = values[np.isfinite(values)]
    if values.size and values.min() >= 0 and values.max() <= 1:
        return {"colorscale": SEQUENTIAL_SCALE, "cmin": 0.0, "cmax": 1.0}
    return value_color_axis(*arrays)


def similarity_heatmap(view: SimilarityMatrix, *, title: str | None = None) -> go.Figure:
    """A heatmap of similarities, rows top to bottom, with the values printed when few.

    Args:
        view: the (R, C) values and the row and column names.
        title: the figure's title; the measure's name when None.
    """
    values = np.asarray(view.values, dtype=float)
    fig = go.Figure()
    if values.size == 0:
        return base_layout(no_data(fig), title or view.measure)
    fig.add_trace(go.Heatmap(
        z=values, x=list(view.columns), y=list(view.rows), coloraxis="coloraxis",
        texttemplate="%{z:.2f}" if values.size <= ANNOTATE_CELLS else None,
        hovertemplate=f"%{{y}}<br>%{{x}}<br>{view.measure} %{{z:.3f}}<extra></extra>",
    ))
    axis = _unit_interval_axis(values)
    fig.update_layout(coloraxis={**axis, "colorbar": {"title": {"text": view.measure}}})
    fig.update_xaxes(type="category", tickangle=-30)
    fig.update_yaxes(type="category", autorange="reversed")
    height = int(np.clip(160 + 36 * len(view.rows), 320, 640))
    return base_layout(fig, title or view.measure, height)


def rdm_panels(view: RDMSet, *, title: str | None = None) -> go.Figure:
    """The RDMs side by side on one colour scale, so equal colours mean equal dissimilarity.

    Args:
        view: K (N, N) matrices over the same samples, with their names.
        title: the figure's title.
    """
    matrices = np.asarray(view.matrices, dtype=float)
    if matrices.size == 0:
        return base_layout(no_data(go.Figure()), title)
    k = len(matrices)
    fig = make_subplots(rows=1, cols=k, subplot_titles=list(view.names), horizontal_spacing=0.04)
    ticks = list(view.sample_labels) if view.sample_labels is not None else None
    for i, matrix in enumerate(matrices):
        fig.add_trace(go.Heatmap(
            z=matrix, x=ticks, y=ticks, coloraxis="coloraxis", name=view.names[i],
            hovertemplate=f"%{{y}} vs %{{x}}<br>{view.metric} dissimilarity %{{z:.3f}}<extra></extra>",
        ), row=1, col=i + 1)
        anchor = "x" if i == 0 else f"x{i + 1}"
        fig.update_yaxes(autorange="reversed", scaleanchor=anchor, scaleratio=1, constrain="domain",
                         showticklabels=False, row=1, col=i + 1)
        fig.update_xaxes(constrain="domain", showticklabels=False, row=1, col=i + 1)
    axis = value_color_axis(matrices)
    fig.update_layout(coloraxis={**axis, "colorbar": {"title": {"text": view.metric}}})
    return base_layout(fig, title, height=int(np.clip(420 - 40 * (k - 1), 280, 420)))


# ---- measures over training ------------------------------------------------------------------


def geometry_curves(view: GeometryCurves, measures: Sequence[str] | None = None, *,
                    title: str | None = None, columns: int = 2) -> go.Figure:
    """Each measure over training in its own panel, one line per layer (same colour in every
    panel; the legend toggles a layer everywhere). NC1 is drawn on a log axis.

    Args:
        view: steps, layers and the (T, L) values of each measure.
        measures: which measures, in order; by default all in `view.values`.
        title: the figure's title.
        columns: panels per row.
    """
    measures = [m for m in (measures or list(view.values)) if m in view.values]
    steps = np.asarray(view.steps, dtype=float)
    if not measures or steps.size == 0:
        return base_layout(no_data(go.Figure()), title)
    columns = min(columns, len(measures))
    rows = -(-len(measures) // columns)
    titles = [MEASURES.get(m, (m, False))[0] for m in measures]
    fig = make_subplots(rows=rows, cols=columns, subplot_titles=titles,
                        horizontal_spacing=0.1, vertical_spacing=0.16 if rows > 1 else 0.1)
    for index, measure in enumerate(measures):
        row, col = index // columns + 1, index % columns + 1
        values = np.asarray(view.values[measure], dtype=float).reshape(len(steps), -1)
        for j, layer in enumerate(view.layers):
            if not np.isfinite(values[:, j]).any():
                continue  # not measured for this layer (e.g. collapse of hidden layers)
            fig.add_trace(go.Scatter(
                x=steps, y=values[:, j], mode="lines+markers", name=layer, legendgroup=layer,
                showlegend=index == 0, line={"color": class_color(j), "width": 2},
                marker={"size": 5},
                hovertemplate=f"{layer}<br>step %{{x}}<br>{measure} %{{y:.4g}}<extra></extra>",
            ), row=row, col=col)
        if MEASURES.get(measure, (measure, False))[1]:
            fig.update_yaxes(type="log", row=row, col=col)
        fig.update_xaxes(title_text="step" if row == rows else None, row=row, col=col)
    return base_layout(fig, title, height=60 + 260 * rows)


# ---- matched units ---------------------------------------------------------------------------


def unit_match_figure(matches: UnitMatch | Sequence[UnitMatch], *, title: str | None = None) -> go.Figure:
    """Correlation of each unit with its match, sorted from best to worst matched.

    One matching of at most BAR_LIMIT units is drawn as bars, otherwise each matching is a
    curve over the rank of the unit (so layers or pairs of runs compare on one axis).

    Args:
        matches: one matching or several.
        title: the figure's title.
    """
    matches = [matches] if isinstance(matches, UnitMatch) else list(matches)
    fig = go.Figure()
    if not matches or all(np.asarray(m.correlations).size == 0 for m in matches):
        return base_layout(no_data(fig), title)
    as_bars = len(matches) == 1 and np.asarray(matches[0].correlations).size <= BAR_LIMIT
    for i, match in enumerate(matches):
        correlations = np.asarray(match.correlations, dtype=float)
        order = np.argsort(-np.nan_to_num(correlations, nan=-np.inf), kind="stable")
        order = order[np.isfinite(correlations[order])]
        units = [f"unit {u} ↔ {int(match.permutation[u])}" for u in order]
        rank = np.arange(1, len(order) + 1)
        style = {"name": match.label or f"pair {i + 1}", "x": rank, "y": correlations[order],
                 "hovertext": units, "hovertemplate": "%{hovertext}<br>correlation %{y:.3f}<extra></extra>"}
        if as_bars:
            fig.add_trace(go.Bar(marker={"color": class_color(i)}, **style))
        else:
            fig.add_trace(go.Scatter(mode="lines", line={"color": class_color(i), "width": 2}, **style))
    fig.add_hline(y=0, line={"color": REFERENCE_COLOR, "width": 1})
    fig.update_xaxes(title_text="unit, best matched first")
    fig.update_yaxes(title_text="matched correlation", range=[min(-0.05, _lowest(matches)), 1.02])
    return base_layout(fig, title)


def _lowest(matches: Sequence[UnitMatch]) -> float:
    values = np.concatenate([np.asarray(m.correlations, dtype=float).ravel() for m in matches])
    values = values[np.isfinite(values)]
    return float(values.min()) - 0.05 if values.size else 0.0
