"""Representation geometry: embeddings (with pictures of the samples, and animated over
training), CKA heatmaps, RDMs, collapse and rank over training, matched units. Builders take
the plain results of engine.results and return plotly figures.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from engine.results import Embedding, EmbeddingFrames, GeometryCurves, RDMSet, SimilarityMatrix, UnitMatch
from viz.style import (
    OUTLINE_COLOR,
    REFERENCE_COLOR,
    SEQUENTIAL_SCALE,
    axis_scale,
    base_layout,
    class_color,
    equal_aspect,
    no_data,
    scatter_trace,
    selected_customdata,
    value_color_axis,
)

__all__ = ["sample_kind", "sample_picture", "embedding_scatter", "shared_bounds", "embedding_animation",
           "selected_samples", "parse_sample_numbers", "sample_gallery", "similarity_heatmap", "rdm_panels",
           "geometry_curves", "alignment_by_layer", "unit_match_figure", "BAR_LIMIT", "SHADES", "GALLERY_LIMIT"]

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
# Pictures of samples in hover text: shades of ink for image pixels (a no-break space for none,
# since plain spaces collapse in the label), levels for a signal's sparkline.
SHADES = "\u00a0░▒▓█"
SPARKS = "▁▂▃▄▅▆▇█"
PICTURE_SIDE = 16  # images wider or taller than this are thinned to it in hover text
SPARK_LENGTH = 48  # signals longer than this are thinned to it
GALLERY_LIMIT = 12  # samples drawn beside the chart at most
GALLERY_COLUMNS = 6


# ---- embeddings ------------------------------------------------------------------------------


def _marker_trace(points: np.ndarray, hover, rows: np.ndarray, n_total: int, **kwargs):
    """A scatter of (n, 2) or (n, 3) points; WebGL above the threshold in 2-D. Each point
    carries its sample number (`rows`) as customdata, so a selection names samples."""
    text = None if hover is None else list(np.asarray(hover, dtype=str))
    coordinates = "x+y+z" if points.shape[1] == 3 else "x+y"
    common = {"mode": "markers", "hovertext": text, "customdata": np.asarray(rows, dtype=int),
              "hoverinfo": "text+name" if text is not None else f"{coordinates}+name"}
    if points.shape[1] == 3:
        return go.Scatter3d(x=points[:, 0], y=points[:, 1], z=points[:, 2], **common, **kwargs)
    return scatter_trace(n_total, x=points[:, 0], y=points[:, 1], **common, **kwargs)


def _trace_rows(view: Embedding) -> list[np.ndarray]:
    """The sample numbers each trace draws, in trace order: one trace per class present for
    classes, one trace of all samples for real values."""
    if not view.categorical:
        return [np.arange(len(view.points))]
    labels = np.asarray(view.values).astype(int)
    return [np.flatnonzero(labels == k) for k in np.unique(labels)]


def _class_name(view: Embedding, k: int) -> str:
    return str(view.class_names[k]) if view.class_names and k < len(view.class_names) else f"class {k}"


def _class_traces(view: Embedding, points: np.ndarray, hover, size: int) -> list:
    """One trace per class present, in the palette colour, so the legend toggles classes."""
    labels = np.asarray(view.values).astype(int)
    traces = []
    for rows in _trace_rows(view):
        k = labels[rows[0]]
        traces.append(_marker_trace(
            points[rows], None if hover is None else hover[rows], rows, len(points), name=_class_name(view, k),
            marker={"color": class_color(k), "size": size, "line": {"color": OUTLINE_COLOR, "width": 0.5}},
        ))
    return traces


def _value_trace(view: Embedding, points: np.ndarray, hover, size: int):
    """All points in one trace, coloured by a real value on the shared colour axis."""
    return _marker_trace(
        points, hover, np.arange(len(points)), len(points), name=view.value_name,
        marker={"color": np.asarray(view.values, dtype=float), "coloraxis": "coloraxis", "size": size},
    )


# ---- pictures of samples ---------------------------------------------------------------------


def sample_kind(input_shape: Sequence[int] | None, n_features: int) -> str:
    """How a sample is best pictured: "image" (height and width above 1), "signal" (a
    sequence of more than three values) or "point" (coordinates)."""
    shape = [int(s) for s in input_shape] if input_shape else [n_features]
    if len(shape) >= 2 and shape[-1] > 1 and shape[-2] > 1:
        return "image"
    return "signal" if n_features > 3 else "point"


def _image(sample: np.ndarray, input_shape: Sequence[int]) -> np.ndarray:
    """A flattened image sample as (height, width), channels averaged."""
    shape = [int(s) for s in input_shape]
    return np.asarray(sample, dtype=float).reshape(-1, shape[-2], shape[-1]).mean(axis=0)


def _levels(values: np.ndarray, low: float, high: float, n: int) -> np.ndarray:
    """values in [low, high] as integer levels 0..n-1 (clipped)."""
    scaled = (np.asarray(values, dtype=float) - low) / (high - low) if high > low else np.zeros(np.shape(values))
    return np.clip(np.round(scaled * (n - 1)), 0, n - 1).astype(int)


def sample_picture(sample: np.ndarray, input_shape: Sequence[int] | None, low: float, high: float) -> str:
    """One sample as text for a hover label (plotly cannot show images there).

    An image becomes rows of shade blocks (two characters per pixel, about square in a
    monospace font; thinned to PICTURE_SIDE), a signal a sparkline (thinned to
    SPARK_LENGTH), a point its coordinates.

    Args:
        sample: the flattened sample.
        input_shape: its natural shape, e.g. [1, 8, 8]; None for a flat vector.
        low, high: the value range that maps to the lightest and darkest shade (the data's
            range, so that pictures of different samples compare).
    """
    sample = np.asarray(sample, dtype=float).ravel()
    kind = sample_kind(input_shape, sample.size)
    if kind == "image":
        image = _image(sample, input_shape)
        stride = max(1, math.ceil(max(image.shape) / PICTURE_SIDE))
        levels = _levels(image[::stride, ::stride], low, high, len(SHADES))
        return "<br>".join("".join(SHADES[v] * 2 for v in row) for row in levels)
    if kind == "signal":
        stride = max(1, math.ceil(sample.size / SPARK_LENGTH))
        return "".join(SPARKS[v] for v in _levels(sample[::stride], low, high, len(SPARKS)))
    return "(" + ", ".join(f"{v:.3g}" for v in sample) + ")"


def _hover_texts(view: Embedding) -> np.ndarray | None:
    """Each point's hover text: the result's own text, then a picture of the sample."""
    hover = None if view.hover is None else np.asarray(view.hover, dtype=str)
    if view.inputs is None or len(view.inputs) != len(view.points):
        return hover
    inputs = np.asarray(view.inputs, dtype=float)
    low, high = float(np.nanmin(inputs)), float(np.nanmax(inputs))
    pictures = [sample_picture(x, view.input_shape, low, high) for x in inputs]
    if hover is None:
        return np.array(pictures)
    return np.array([f"{text}<br>{picture}" for text, picture in zip(hover, pictures)])


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
    hover = _hover_texts(view)
    if view.categorical:
        fig.add_traces(_class_traces(view, points, hover, size))
    else:
        fig.add_trace(_value_trace(view, points, hover, size))
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
    base_layout(fig, title, height)
    if view.inputs is not None:  # pictures in the hover text line up only in a monospace font
        fig.update_layout(hoverlabel={"font": {"family": "DejaVu Sans Mono, Menlo, Consolas, monospace"}})
    return fig


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


def embedding_animation(view: EmbeddingFrames, *, title: str | None = None, height: int = 520,
                        frame_ms: int = 500) -> go.Figure:
    """The embedding at every checkpoint as an animation: a play button and a slider over the
    steps, axes fixed to hold every frame so that motion on screen is motion of the points.

    Args:
        view: T aligned frames of the same samples (points (T, N, dim)).
        title: the figure's title.
        height: in pixels.
        frame_ms: how long each frame shows when playing.
    """
    points = np.asarray(view.points, dtype=float)
    steps = np.asarray(view.steps)
    if points.size == 0 or len(steps) == 0:
        return base_layout(no_data(go.Figure()), title, height)
    fig = embedding_scatter(view.frame(0), title=title, bounds=shared_bounds(list(points)), height=height)
    rows = _trace_rows(view.frame(0))
    # Frames as plain dicts: plotly then checks each once, not again inside go.Frame.
    fig.frames = [{"name": str(int(step)), "traces": list(range(len(rows))),
                   "data": [_moved(trace, points[t][r]) for trace, r in zip(fig.data, rows)]}
                  for t, step in enumerate(steps)]
    playing = {"frame": {"duration": frame_ms, "redraw": points.shape[2] == 3}, "fromcurrent": True,
               "transition": {"duration": frame_ms // 2}, "mode": "immediate"}
    still = {"frame": {"duration": 0, "redraw": points.shape[2] == 3}, "transition": {"duration": 0},
             "mode": "immediate"}
    fig.update_layout(
        updatemenus=[{"type": "buttons", "direction": "left", "x": 0.0, "y": 0.0, "xanchor": "left",
                      "yanchor": "top", "pad": {"t": 40, "r": 10}, "showactive": False,
                      "buttons": [{"label": "▶ Play", "method": "animate", "args": [None, playing]},
                                  {"label": "❚❚ Pause", "method": "animate", "args": [[None], still]}]}],
        sliders=[{"active": 0, "x": 0.18, "len": 0.82, "y": 0.0, "yanchor": "top", "pad": {"t": 30},
                  "currentvalue": {"prefix": "step "},
                  "steps": [{"label": f"{int(step):,}", "method": "animate", "args": [[str(int(step))], still]}
                            for step in steps]}],
    )
    fig.update_layout(height=height + 80, margin={"b": 110})
    return fig


def _moved(trace, points: np.ndarray) -> dict:
    """A frame's version of a trace: the same type of trace with new coordinates only."""
    coordinates = {"type": trace.type, "x": points[:, 0], "y": points[:, 1]}
    if points.shape[1] == 3:
        coordinates["z"] = points[:, 2]
    return coordinates


# ---- samples picked on a chart ---------------------------------------------------------------


def selected_samples(selection: Mapping | None) -> list[int]:
    """The sample numbers of the points a user picked on an embedding chart, first picked
    first, without repeats.

    Args:
        selection: Streamlit's selection state of the chart (`event.selection`, or the
            event itself), whose points carry the sample number as `customdata` (as the
            traces of `embedding_scatter` do). None or an empty selection gives [].
    """
    samples: list[int] = []
    for data in selected_customdata(selection):
        if isinstance(data, (list, tuple)):
            data = data[0] if data else None
        if data is not None and int(data) not in samples:
            samples.append(int(data))
    return samples


def parse_sample_numbers(text: str, n_samples: int) -> list[int]:
    """Sample numbers typed by a user ("3, 17 42") as a list; ValueError with a sentence for
    anything that is not a whole number from 0 to n_samples - 1."""
    numbers = []
    for word in text.replace(",", " ").split():
        if not word.isdigit() or int(word) >= n_samples:
            raise ValueError(f"Sample numbers are whole numbers from 0 to {n_samples - 1}; '{word}' is not one.")
        numbers.append(int(word))
    return list(dict.fromkeys(numbers))


def _sample_title(view: Embedding, i: int) -> str:
    value = np.asarray(view.values)[i]
    shown = _class_name(view, int(value)) if view.categorical and view.value_name == "class" else (
        f"{view.value_name} {int(value)}" if view.categorical else f"{view.value_name} {float(value):.3g}")
    return f"#{i} · {shown}"


def sample_gallery(view: Embedding, samples: Iterable[int], *, title: str | None = None,
                   limit: int = GALLERY_LIMIT) -> go.Figure:
    """The chosen samples themselves: images as greyscale pictures, signals as curves, and
    low-dimensional points marked among all the samples in input space.

    Args:
        view: an embedding that carries its samples (`inputs`, `input_shape`).
        samples: sample numbers (rows of the embedding), e.g. from `selected_samples`.
        title: the figure's title.
        limit: at most this many samples are drawn (the first ones).
    """
    n = 0 if view.inputs is None else len(view.inputs)
    chosen = [int(i) for i in samples if 0 <= int(i) < n][:limit]
    if not chosen:
        message = "the samples are not stored with this embedding" if n == 0 else "pick points to see their samples"
        return base_layout(no_data(go.Figure(), message), title, height=240)
    inputs = np.asarray(view.inputs, dtype=float)
    kind = sample_kind(view.input_shape, inputs.shape[1])
    if kind == "point":
        return _points_in_input_space(view, inputs, chosen, title)
    columns = min(len(chosen), GALLERY_COLUMNS)
    rows = -(-len(chosen) // columns)
    fig = make_subplots(rows=rows, cols=columns, subplot_titles=[_sample_title(view, i) for i in chosen],
                        horizontal_spacing=0.03, vertical_spacing=0.12 if rows > 1 else 0.05)
    low, high = float(np.nanmin(inputs)), float(np.nanmax(inputs))
    for index, i in enumerate(chosen):
        row, col = index // columns + 1, index % columns + 1
        label = np.asarray(view.values)[i]
        colour = class_color(int(label)) if view.categorical else OUTLINE_COLOR
        if kind == "image":
            fig.add_trace(go.Heatmap(z=_image(inputs[i], view.input_shape), zmin=low, zmax=high, colorscale="Greys",
                                     showscale=False, hovertemplate="row %{y}, column %{x}: %{z:.2f}<extra></extra>"),
                          row=row, col=col)
            anchor = "x" if index == 0 else f"x{index + 1}"
            fig.update_yaxes(autorange="reversed", scaleanchor=anchor, scaleratio=1, constrain="domain",
                             row=row, col=col)
            fig.update_xaxes(constrain="domain", row=row, col=col)
        else:
            fig.add_trace(go.Scatter(y=inputs[i], mode="lines", line={"color": colour, "width": 2},
                                     hovertemplate="position %{x}: %{y:.3g}<extra></extra>"), row=row, col=col)
            fig.update_yaxes(range=[low, high], row=row, col=col)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    fig.update_layout(showlegend=False)
    per_row = 150 if kind == "image" else 120
    return base_layout(fig, title, height=60 + per_row * rows)


def _points_in_input_space(view: Embedding, inputs: np.ndarray, chosen: list[int], title: str | None) -> go.Figure:
    """All samples in input space (the first two coordinates, or the input against the value
    for one), faint, with the chosen ones marked and numbered."""
    if inputs.shape[1] >= 2:
        xy, names = inputs[:, :2], ("x1", "x2")
    else:
        xy, names = np.column_stack([inputs[:, 0], np.asarray(view.values, dtype=float)]), ("x", view.value_name)
    fig = go.Figure()
    fig.add_trace(scatter_trace(len(xy), x=xy[:, 0], y=xy[:, 1], mode="markers", name="all samples",
                                marker={"color": REFERENCE_COLOR, "size": 4, "opacity": 0.25}, hoverinfo="skip"))
    colours = [class_color(int(np.asarray(view.values)[i])) if view.categorical else OUTLINE_COLOR for i in chosen]
    fig.add_trace(go.Scatter(
        x=xy[chosen, 0], y=xy[chosen, 1], mode="markers+text", name="picked", text=[f"#{i}" for i in chosen],
        textposition="top center", customdata=np.asarray(chosen),
        marker={"color": colours, "size": 12, "line": {"color": OUTLINE_COLOR, "width": 1.5}},
        hovertemplate="sample %{customdata}<br>(%{x:.3g}, %{y:.3g})<extra></extra>",
    ))
    if inputs.shape[1] >= 2:
        equal_aspect(fig, x_title=names[0], y_title=names[1])
    else:
        fig.update_xaxes(title_text=names[0])
        fig.update_yaxes(title_text=names[1])
    fig.update_layout(showlegend=False)
    return base_layout(fig, title, height=360)


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
    # The measure's name runs up the colour bar: across, a long name squeezes the cells.
    fig.update_layout(coloraxis={**axis, "colorbar": {"title": {"text": view.measure, "side": "right"}}})
    # Every row and column named in full: plotly would otherwise skip every other name when
    # they crowd and cut long ones at the margin ("synflow_iterative" read as "synflow").
    fig.update_xaxes(type="category", tickangle=-30, dtick=1, automargin=True)
    fig.update_yaxes(type="category", autorange="reversed", dtick=1, automargin=True)
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
            fig.update_yaxes(**axis_scale(True), row=row, col=col)
        fig.update_xaxes(title_text="step" if row == rows else None, row=row, col=col)
    return base_layout(fig, title, height=60 + 260 * rows)


def alignment_by_layer(curves: Mapping[str, GeometryCurves], *, title: str | None = None) -> go.Figure:
    """Each layer's CKA with the inputs (solid) and with the targets (dashed) at the last
    checkpoint, one colour per run: tanh layers follow the targets, ReLU layers keep the
    inputs (Alleman et al. 2024).

    Args:
        curves: {run name: its geometry over training}; runs may have different layers.
    """
    fig = go.Figure()
    for i, (name, view) in enumerate(curves.items()):
        if "cka_input" not in view.values:
            continue
        depth = list(range(1, len(view.layers) + 1))
        for measure, dash, what in (("cka_input", "solid", "inputs"), ("cka_target", "dash", "targets")):
            values = np.asarray(view.values[measure], dtype=float).reshape(len(view.steps), -1)[-1]
            fig.add_trace(go.Scatter(
                x=depth, y=values, mode="lines+markers", name=f"{name}: CKA with the {what}",
                line={"color": class_color(i), "dash": dash}, customdata=view.layers,
                hovertemplate=f"{name}<br>%{{customdata}}<br>CKA with the {what} %{{y:.3f}}<extra></extra>"))
    if not fig.data:
        return base_layout(no_data(fig, "no alignment measured"), title)
    fig.update_xaxes(title_text="layer (1 = first hidden)", dtick=1)
    fig.update_yaxes(title_text="linear CKA", range=[0, 1.02])
    return base_layout(fig, title)


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
