"""Level-set figures: traversal paths over a 2-D confidence map, snapshots of an image path,
confidence and distance along a path, the confidence over a star triangle and a width probe.

Every builder takes the plain results of `engine.levelset` (from `engine.results`, numpy
only). A batched `LevelSetPath` draws all its pairs, one colour per pair; `path.pair(i)`
picks one.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from engine.results import ConfidenceMap, LevelSetPath, SampleGallery, TriangleConfidence, WidthProbe, is_image_shape
from viz.style import OUTLINE_COLOR, REFERENCE_COLOR, SEQUENTIAL_SCALE, base_layout, class_color, equal_aspect, image_trace

__all__ = ["role_color", "chosen_positions", "path_on_map", "gallery_grid", "sample_gallery", "picked_samples",
           "snapshot_indices", "snapshot_strip", "path_profile", "triangle_map", "width_profile", "compare_paths",
           "SAMPLES", "ROLES"]

LEVEL_STEP = 0.1  # confidence between the map's contour lines
N_SNAPSHOTS = 8
SNAPSHOT_HEIGHT = 220
FAINT = 0.35  # opacity of one pair's line among many
SAMPLES = "test samples"  # the name of the trace a click picks samples from
ROLES = ("source", "target A", "target B")  # what a picked pair holds, in order
GALLERY_COLUMNS = 12  # thumbnails per row when there are too many classes for a column each
THUMBNAIL_PX = 56  # a thumbnail's height in the gallery


def _pairs(path: LevelSetPath) -> list[LevelSetPath]:
    """The path's pairs, each in the single-pair layout."""
    return [path.pair(i) for i in range(path.n_pairs)]


# ---------------------------------------------------------------- 2-D: paths over the map


def _confidence_contours(cmap: ConfidenceMap) -> go.Contour:
    return go.Contour(
        x=cmap.grid_x, y=cmap.grid_y, z=cmap.confidence, colorscale=SEQUENTIAL_SCALE,
        zmin=0.0, zmax=1.0, contours={"start": LEVEL_STEP, "end": 1 - LEVEL_STEP, "size": LEVEL_STEP},
        line={"width": 0.5, "color": "white"}, name=f"p(class {cmap.class_index})",
        colorbar={"title": {"text": f"p(class {cmap.class_index})"}},
        hovertemplate="(%{x:.3g}, %{y:.3g})<br>p %{z:.3f}<extra></extra>",
    )


def _source_level(cmap: ConfidenceMap, level: float, color: str) -> go.Contour:
    """The one contour line of the map at the source's confidence: the level set walked on."""
    return go.Contour(
        x=cmap.grid_x, y=cmap.grid_y, z=cmap.confidence, showscale=False, hoverinfo="skip",
        contours={"coloring": "none", "start": level, "end": level, "size": 1.0},
        line={"color": color, "width": 3, "dash": "dot"}, name="source's level set",
        showlegend=False,
    )


def _pair_traces(pair: LevelSetPath, color: str, first: bool) -> list[go.Scatter]:
    """The path, the straight line from source to end point, and the source and target."""
    path, end = pair.path, pair.path[-1]
    legend = {"showlegend": first}
    hover = np.column_stack([pair.step, pair.confidence])
    return [
        go.Scatter(x=[path[0, 0], end[0]], y=[path[0, 1], end[1]], mode="lines",
                   line={"color": color, "dash": "dash", "width": 1.5}, name="straight line",
                   legendgroup="straight", hoverinfo="skip", **legend),
        go.Scatter(x=path[:, 0], y=path[:, 1], mode="lines+markers", name="path",
                   line={"color": color, "width": 2}, marker={"size": 4, "color": color},
                   legendgroup="path", customdata=hover,
                   hovertemplate="step %{customdata[0]:.0f}<br>p %{customdata[1]:.3f}<extra></extra>",
                   **legend),
        go.Scatter(x=[path[0, 0]], y=[path[0, 1]], mode="markers", name="source",
                   marker={"size": 12, "color": color, "line": {"color": OUTLINE_COLOR, "width": 1.5}},
                   legendgroup="source", **legend),
        go.Scatter(x=[pair.target[0]], y=[pair.target[1]], mode="markers", name="target",
                   marker={"size": 12, "symbol": "x", "color": color,
                           "line": {"color": OUTLINE_COLOR, "width": 1}},
                   legendgroup="target", **legend),
    ]


def role_color(role: int) -> str:
    """The colour of the source (0), target A (1) and target B (2) in every picking figure;
    the targets share the colours of their paths (pair 0 and pair 1)."""
    return OUTLINE_COLOR if role == 0 else class_color(role - 1)


def chosen_positions(gallery: SampleGallery, chosen: Sequence[int]) -> list[tuple[int, int]]:
    """(role, position in the gallery) of each chosen sample the gallery holds; role 0 is the
    source, 1 and 2 the targets."""
    found = [(role, gallery.position(sample)) for role, sample in enumerate(chosen)]
    return [(role, position) for role, position in found if position is not None]


def _sample_hover(gallery: SampleGallery) -> tuple[np.ndarray, str]:
    customdata = np.column_stack([gallery.index, gallery.label, gallery.predicted])
    template = ("test sample %{customdata[0]}<br>class %{customdata[1]}, predicted %{customdata[2]}"
                "<br>click to pick<extra></extra>")
    return customdata, template


def _sample_points(gallery: SampleGallery) -> go.Scatter:
    """The 2-D test samples as points coloured by class, to click."""
    customdata, template = _sample_hover(gallery)
    return go.Scatter(
        x=gallery.x[:, 0], y=gallery.x[:, 1], mode="markers", name=SAMPLES,
        marker={"color": [class_color(c) for c in gallery.label], "size": 8,
                "line": {"color": OUTLINE_COLOR, "width": 0.5}},
        customdata=customdata, hovertemplate=template,
        selected={"marker": {"opacity": 1.0}}, unselected={"marker": {"opacity": 1.0}},
    )


def _name_chosen_points(fig: go.Figure, gallery: SampleGallery, chosen: Sequence[int]) -> None:
    """A labelled arrow to each chosen 2-D sample (legible on any background)."""
    for role, position in chosen_positions(gallery, chosen):
        x, y = gallery.x[position]
        fig.add_annotation(x=x, y=y, text=ROLES[role], showarrow=True, arrowhead=2, ax=0, ay=-28,
                           arrowcolor=role_color(role), bgcolor="rgba(255,255,255,0.85)",
                           bordercolor=role_color(role), borderwidth=1.5, font={"size": 12})


def path_on_map(cmap: ConfidenceMap, path: Optional[LevelSetPath] = None, *,
                gallery: Optional[SampleGallery] = None, chosen: Sequence[int] = (),
                title: Optional[str] = None) -> go.Figure:
    """A 2-D model's class confidence with its level sets, and traversal paths on top.

    Each pair shows its path (line and markers), the straight line from the source to the
    path's end, the source (circle) and the target (cross). Where the map shows the pair's
    source class, the source's own level set is drawn as a dotted line. With a gallery the
    test samples are drawn too, as the points a click picks (`picked_samples`).

    Args:
        cmap: the confidence of one class over a grid (engine.levelset.confidence_map).
        path: a traversal of 2-D inputs, one pair or a batch; None for the map alone.
        gallery: test samples of 2-D inputs to draw and pick from, or None.
        chosen: the test samples picked as source, target A and target B (named on the map).
        title: the figure's title.
    """
    if gallery is not None and gallery.x.shape[1] != 2:
        raise ValueError("Samples can be drawn on a map only for 2-D inputs.")
    fig = go.Figure(_confidence_contours(cmap))
    for i, pair in enumerate(_pairs(path) if path is not None else []):
        if pair.path.shape[-1] != 2:
            raise ValueError("Paths can be drawn on a map only for 2-D inputs.")
        color = class_color(i)
        if int(pair.source_class) == cmap.class_index:
            fig.add_trace(_source_level(cmap, float(pair.confidence[0]), color))
        fig.add_traces(_pair_traces(pair, color, first=i == 0))
    if gallery is not None:
        fig.add_trace(_sample_points(gallery))  # on top, where clicks land
        _name_chosen_points(fig, gallery, chosen)
    equal_aspect(fig)
    fig.update_xaxes(range=[cmap.grid_x[0], cmap.grid_x[-1]])
    fig.update_yaxes(range=[cmap.grid_y[0], cmap.grid_y[-1]])
    fig.update_layout(legend={"orientation": "h", "y": -0.15})
    return base_layout(fig, title)


# ---------------------------------------------------------------- images and signals: a gallery to pick from


def gallery_grid(labels: np.ndarray, n_classes: int, columns: int = GALLERY_COLUMNS) -> np.ndarray:
    """(N, 2) (row, column) of each sample: a column per class while the classes fit in
    `columns` (the samples sorted by class), else row by row."""
    labels = np.asarray(labels, dtype=int)
    if n_classes <= columns:
        rank = np.array([np.sum(labels[:i] == c) for i, c in enumerate(labels)], dtype=int)
        return np.column_stack([rank, labels])
    k = np.arange(len(labels))
    return np.column_stack([k // columns, k % columns])


def _mosaic(images: np.ndarray, cells: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """One array of all (H, W) images at their (row, column) cells, a NaN gap between them."""
    h, w = shape
    rows, cols = cells.max(axis=0) + 1
    mosaic = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), np.nan)
    for image, (r, c) in zip(images, cells):
        mosaic[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = image
    return mosaic


def _signal_lines(signals: np.ndarray, cells: np.ndarray, cell: tuple[float, float]) -> tuple[list, list]:
    """x and y of every signal drawn inside its cell (scaled to the cell's height), as one
    line with breaks between signals."""
    height, width = cell
    low, high = float(np.nanmin(signals)), float(np.nanmax(signals))
    scaled = (signals - low) / ((high - low) or 1.0)  # 0..1
    t = np.linspace(0.1, 0.9, signals.shape[1]) * width
    xs, ys = [], []
    for signal, (r, c) in zip(scaled, cells):
        xs += list(c * width + t) + [None]
        ys += list((r + 0.85 - 0.7 * signal) * height) + [None]  # row 0 on top (y reversed)
    return xs, ys


def sample_gallery(gallery: SampleGallery, chosen: Sequence[int] = (), *,
                   title: Optional[str] = None) -> go.Figure:
    """Thumbnails of test samples, one column per class, to click a source or target in.

    Images are drawn as grey pictures, signals (MNIST-1D) as small line plots. A frame in
    the pair's colour marks the chosen samples: the source dark, target A and B in the
    colours of their paths. `picked_samples` maps a click on the figure to a test sample.

    Args:
        gallery: the samples (engine.recipes.levelset_gallery).
        chosen: the test samples picked as source, target A and target B.
        title: the figure's title.
    """
    shape = gallery.input_shape or (gallery.x.shape[1],)
    n_classes = int(max(gallery.label.max(), gallery.predicted.max())) + 1 if len(gallery.label) else 0
    cells = gallery_grid(gallery.label, n_classes)
    rows, cols = cells.max(axis=0) + 1
    image = is_image_shape(shape)
    fig = go.Figure()
    if image:
        h, w = int(shape[-2]), int(shape[-1])
        images = gallery.x.reshape(len(gallery.x), -1, h, w).mean(axis=1)
        fig.add_trace(go.Heatmap(z=_mosaic(images, cells, (h, w)), colorscale="Greys", showscale=False,
                                 hoverinfo="skip", showlegend=False))
        cell, offset = np.array([h + 1, w + 1]), (np.array([h, w]) - 1) / 2
    else:
        cell, offset = np.array([1.0, 2.0]), np.array([0.5, 1.0])  # signals: cells twice as wide as high
        xs, ys = _signal_lines(gallery.x, cells, tuple(cell))
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line={"color": REFERENCE_COLOR, "width": 1},
                                 hoverinfo="skip", showlegend=False))
    centres = cells * cell + offset
    customdata, template = _sample_hover(gallery)
    fig.add_trace(go.Scatter(  # invisible squares over the thumbnails: what a click hits
        x=centres[:, 1], y=centres[:, 0], mode="markers", name=SAMPLES, showlegend=False,
        marker={"symbol": "square", "size": THUMBNAIL_PX - 6, "color": "rgba(0,0,0,0)"},
        customdata=customdata, hovertemplate=template,
        selected={"marker": {"opacity": 1.0}}, unselected={"marker": {"opacity": 1.0}},
    ))
    half = (cell - (1 if image else 0.1)) / 2  # (rows, columns) half-extent of a thumbnail
    for role, position in chosen_positions(gallery, chosen):
        (y, x), width = centres[position], 3 - role / 2  # a sample in two roles shows both frames
        fig.add_shape(type="rect", x0=x - half[1], x1=x + half[1], y0=y - half[0], y1=y + half[0],
                      line={"color": role_color(role), "width": width}, name=ROLES[role])
    for role, name in enumerate(ROLES):  # legend entries for the frames (no points: not clickable)
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=name,
                                 marker={"symbol": "square-open", "size": 12, "color": role_color(role),
                                         "line": {"width": 3}}))
    if n_classes <= GALLERY_COLUMNS:
        for c in range(cols):
            fig.add_annotation(x=c * cell[1] + offset[1], y=1.0, yref="paper", text=f"class {c}",
                               showarrow=False, yanchor="bottom", font={"size": 11})
    edge = 0.5 if image else 0.0  # an image's pixels are centred on whole numbers
    fig.update_xaxes(visible=False, range=[-edge, cols * cell[1] - 3 * edge])
    fig.update_yaxes(visible=False, range=[rows * cell[0] - 3 * edge, -edge])  # row 0 on top
    if image:
        fig.update_yaxes(scaleanchor="x", constrain="domain")  # square pixels
    base_layout(fig, title, height=int(rows * THUMBNAIL_PX + 110))
    fig.update_layout(dragmode=False, hovermode="closest", legend={"orientation": "h", "y": -0.02})
    return fig


def picked_samples(figure: go.Figure, selection: Optional[dict]) -> list[int]:
    """The test samples of a selection event on a picking figure, in the order picked.

    Args:
        figure: a figure with a trace named `SAMPLES` (`sample_gallery`, or `path_on_map`
            with a gallery), as drawn.
        selection: the chart's event state, `{"selection": {"points": [...]}}`, each point
            with `curve_number` and `point_index` (Streamlit's plotly selection); None or
            an empty selection picks nothing.
    """
    names = [trace.name for trace in figure.data]
    if SAMPLES not in names or not selection:
        return []
    curve = names.index(SAMPLES)
    customdata = figure.data[curve].customdata
    picked = []
    for point in (selection.get("selection") or {}).get("points", []):
        index = point.get("point_index", point.get("point_number"))
        if point.get("curve_number") == curve and index is not None and 0 <= index < len(customdata):
            picked.append(int(customdata[index][0]))
    return picked


# ---------------------------------------------------------------- images: snapshots


def snapshot_indices(n_points: int, n_snapshots: int) -> np.ndarray:
    """Up to n_snapshots recorded points spread evenly from the first to the last."""
    return np.unique(np.linspace(0, n_points - 1, min(n_snapshots, n_points)).round().astype(int))


def _signal_trace(signal: np.ndarray, color: str, dash: str = "solid") -> go.Scatter:
    return go.Scatter(y=signal, mode="lines", line={"color": color, "width": 1.5, "dash": dash},
                      showlegend=False, hovertemplate="%{y:.2f}<extra></extra>")


def snapshot_strip(path: LevelSetPath, *, n_snapshots: int = N_SNAPSHOTS, show_target: bool = True,
                   title: Optional[str] = None) -> go.Figure:
    """Snapshots of an image or signal path, from source to end, with the confidence under each.

    Images are drawn as pictures; signals (e.g. MNIST-1D's (1, 40)) as lines, with the
    target dotted behind each snapshot so the approach shows.

    Args:
        path: a traversal with a known `input_shape`; one pair (for a batch, `path.pair(i)`).
        n_snapshots: how many recorded points to show, evenly spread.
        show_target: add the target as a last panel.
        title: the figure's title.
    """
    if path.batched:
        raise ValueError("Show one pair's snapshots: pass path.pair(i).")
    if path.input_shape is None:
        raise ValueError("Snapshots need the samples' shape: this path has none.")
    index = snapshot_indices(len(path.path), n_snapshots)
    labels = [f"step {path.step[k]}<br>p {path.confidence[k]:.3f}" for k in index]
    panels = [path.path[k] for k in index]
    if show_target:
        panels.append(np.asarray(path.target))
        labels.append("target")
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=labels, horizontal_spacing=0.01)
    if is_image_shape(path.input_shape):
        shape = tuple(path.input_shape) if len(path.input_shape) == 3 else (1, *path.input_shape)
        bounds = path.settings.get("bounds")
        zrange = tuple(bounds) if bounds else (float(path.path.min()), float(path.path.max()))
        for col, image in enumerate(panels, start=1):
            fig.add_trace(image_trace(image.reshape(shape), zrange), row=1, col=col)
        fig.update_yaxes(autorange="reversed", scaleanchor="x")  # row 0 on top, square pixels
    else:
        target = np.asarray(path.target).ravel()
        for col, signal in enumerate(panels, start=1):
            if col < len(panels) or not show_target:
                fig.add_trace(_signal_trace(target, REFERENCE_COLOR, "dot"), row=1, col=col)
            fig.add_trace(_signal_trace(np.ravel(signal), class_color(0)), row=1, col=col)
        low, high = float(min(path.path.min(), target.min())), float(max(path.path.max(), target.max()))
        fig.update_yaxes(range=[low - 0.05 * (high - low), high + 0.05 * (high - low)])
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, constrain="domain")
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, constrain="domain")
    fig.update_annotations(font_size=11)
    return base_layout(fig, title, height=SNAPSHOT_HEIGHT)


# ---------------------------------------------------------------- along the path


def _series(fig: go.Figure, step: np.ndarray, values: np.ndarray, row: int, name: str,
            dash: str = "solid") -> None:
    """One line per pair (faint when there are many), plus their mean for a batch."""
    values = values.reshape(len(step), -1)
    many = values.shape[1] > 1
    for i in range(values.shape[1]):
        fig.add_trace(go.Scatter(
            x=step, y=values[:, i], mode="lines", name=name if not many else f"{name}, pair {i}",
            line={"color": class_color(i), "width": 1.5, "dash": dash}, opacity=FAINT if many else 1.0,
            legendgroup=name, showlegend=not many,
        ), row=row, col=1)
    if many:
        fig.add_trace(go.Scatter(
            x=step, y=values.mean(axis=1), mode="lines", name=f"{name}, mean",
            line={"color": OUTLINE_COLOR, "width": 3, "dash": dash}, legendgroup=name,
        ), row=row, col=1)


def path_profile(path: LevelSetPath, *, title: Optional[str] = None) -> go.Figure:
    """Confidence and distance to the target along the path, in stacked panels.

    The top panel shows the source class's confidence, with the lowest a step may accept
    (p0 - threshold) for one pair; the next the l2 and l_inf distances to the target; a
    third, for images, the SSIM to the target. A batch draws every pair faintly and the
    mean boldly.

    Args:
        path: a traversal, one pair or a batch.
        title: the figure's title.
    """
    panels = ["confidence of the source class", "distance to the target"]
    if path.ssim is not None:
        panels.append("SSIM to the target")
    fig = make_subplots(rows=len(panels), cols=1, shared_xaxes=True, subplot_titles=panels,
                        vertical_spacing=0.08)
    _series(fig, path.step, path.confidence, 1, "confidence")
    if not path.batched and "threshold" in path.settings:
        floor = float(path.confidence[0]) - float(path.settings["threshold"])
        fig.add_hline(y=floor, line={"color": REFERENCE_COLOR, "dash": "dot"}, row=1, col=1,
                      annotation_text="p0 - threshold", annotation_position="bottom right")
    _series(fig, path.step, path.l2, 2, "l2")
    _series(fig, path.step, path.linf, 2, "l∞", dash="dot")
    if path.ssim is not None:
        _series(fig, path.step, path.ssim, 3, "SSIM")
    fig.update_xaxes(title_text="step", row=len(panels), col=1)
    return base_layout(fig, title, height=200 * len(panels) + 60)


# ---------------------------------------------------------------- star triangle and width


def _statistics_line(tri: TriangleConfidence) -> str:
    above = ", ".join(f"{f:.0%} above p−{d:g}" for d, f in zip(tri.drops, tri.fraction_above))
    return (f"p source {tri.p_source:.3f} · mean {tri.mean:.3f} · {above}<br>"
            f"edge minima: source–A {tri.edge_min[0]:.3f}, source–B {tri.edge_min[1]:.3f}, "
            f"A–B {tri.edge_min[2]:.3f}")


def triangle_map(tri: TriangleConfidence, *, title: Optional[str] = None) -> go.Figure:
    """The source class's confidence over the triangle (source, end A, end B), drawn flat.

    The points are placed at their true coordinates in the triangle's plane (source at the
    origin, end A to its right), so side lengths and angles are those in input space. The
    colour range spans the values (a star-shaped level set shows a nearly uniform
    triangle); the statistics are written under the figure.

    Args:
        tri: the result of engine.levelset.triangle_confidence.
        title: the figure's title.
    """
    n_side = int(tri.settings.get("resolution", 20)) + 1
    low = float(min(tri.confidence.min(), tri.p_source))
    high = float(max(tri.confidence.max(), tri.p_source))
    fig = go.Figure(go.Scatter(
        x=tri.plane[:, 0], y=tri.plane[:, 1], mode="markers", name="confidence",
        marker={"color": tri.confidence, "colorscale": SEQUENTIAL_SCALE, "cmin": low,
                "cmax": high if high > low else low + 1e-6, "size": max(4, 240 // n_side),
                "colorbar": {"title": {"text": f"p(class {tri.source_class})"}}},
        customdata=tri.weights, showlegend=False,
        hovertemplate="A weight %{customdata[0]:.2f}, B weight %{customdata[1]:.2f}"
                      "<br>p %{marker.color:.4f}<extra></extra>",
    ))
    corners = np.vstack([tri.vertices, tri.vertices[:1]])
    fig.add_trace(go.Scatter(
        x=corners[:, 0], y=corners[:, 1], mode="lines+markers+text",
        text=["source", "end A", "end B", ""], textposition="top center", showlegend=False,
        line={"color": OUTLINE_COLOR, "width": 1.5}, marker={"size": 7, "color": OUTLINE_COLOR},
        hoverinfo="skip",
    ))
    fig.add_annotation(text=_statistics_line(tri), x=0, y=-0.12, xref="paper", yref="paper",
                       xanchor="left", yanchor="top", showarrow=False, align="left")
    equal_aspect(fig, x_title="along source → end A", y_title="across")
    base_layout(fig, title, height=440)
    fig.update_layout(margin={"b": 95})
    return fig


def width_profile(probe: WidthProbe, *, title: Optional[str] = None) -> go.Figure:
    """Confidence against distance along random directions orthogonal to the path.

    Args:
        probe: the result of engine.levelset.width_probe.
        title: the figure's title.
    """
    fig = go.Figure()
    for k, row in enumerate(probe.confidence):
        fig.add_trace(go.Scatter(
            x=probe.radii, y=row, mode="lines", opacity=FAINT, showlegend=k == 0,
            name="one direction", legendgroup="directions",
            line={"color": class_color(0), "width": 1},
        ))
    fig.add_trace(go.Scatter(x=probe.radii, y=probe.mean, mode="lines+markers", name="mean",
                             line={"color": OUTLINE_COLOR, "width": 3}))
    fig.add_hline(y=probe.p_point, line={"color": REFERENCE_COLOR, "dash": "dot"},
                  annotation_text="at the path", annotation_position="bottom left")
    fig.update_xaxes(title_text="distance from the path (l2)")
    fig.update_yaxes(title_text=f"p(class {probe.source_class})")
    return base_layout(fig, title)


def compare_paths(paths: Sequence[LevelSetPath], names: Sequence[str], *,
                  title: Optional[str] = None) -> go.Figure:
    """The mean confidence and l2 distance along several traversals (e.g. a standard and an
    adversarially trained model), on shared axes.

    Args:
        paths: traversals, each one pair or a batch (averaged over its pairs).
        names: one name per traversal, for the legend.
        title: the figure's title.
    """
    fig = make_subplots(rows=1, cols=2, subplot_titles=("mean confidence", "mean l2 distance to the target"))
    for i, (path, name) in enumerate(zip(paths, names)):
        color = class_color(i)
        for col, values in ((1, path.confidence), (2, path.l2)):
            fig.add_trace(go.Scatter(
                x=path.step, y=values.reshape(len(path.step), -1).mean(axis=1), mode="lines",
                name=name, legendgroup=name, showlegend=col == 1, line={"color": color, "width": 2},
            ), row=1, col=col)
    fig.update_xaxes(title_text="step")
    return base_layout(fig, title)
