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

from engine.results import ConfidenceMap, LevelSetPath, TriangleConfidence, WidthProbe
from viz.style import (OUTLINE_COLOR, REFERENCE_COLOR, SEQUENTIAL_SCALE, base_layout, class_color,
                       equal_aspect)

LEVEL_STEP = 0.1  # confidence between the map's contour lines
N_SNAPSHOTS = 8
SNAPSHOT_HEIGHT = 220
FAINT = 0.35  # opacity of one pair's line among many


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


def path_on_map(cmap: ConfidenceMap, path: Optional[LevelSetPath] = None, *,
                title: Optional[str] = None) -> go.Figure:
    """A 2-D model's class confidence with its level sets, and traversal paths on top.

    Each pair shows its path (line and markers), the straight line from the source to the
    path's end, the source (circle) and the target (cross). Where the map shows the pair's
    source class, the source's own level set is drawn as a dotted line.

    Args:
        cmap: the confidence of one class over a grid (engine.levelset.confidence_map).
        path: a traversal of 2-D inputs, one pair or a batch; None for the map alone.
        title: the figure's title.
    """
    fig = go.Figure(_confidence_contours(cmap))
    for i, pair in enumerate(_pairs(path) if path is not None else []):
        if pair.path.shape[-1] != 2:
            raise ValueError("Paths can be drawn on a map only for 2-D inputs.")
        color = class_color(i)
        if int(pair.source_class) == cmap.class_index:
            fig.add_trace(_source_level(cmap, float(pair.confidence[0]), color))
        fig.add_traces(_pair_traces(pair, color, first=i == 0))
    equal_aspect(fig)
    fig.update_xaxes(range=[cmap.grid_x[0], cmap.grid_x[-1]])
    fig.update_yaxes(range=[cmap.grid_y[0], cmap.grid_y[-1]])
    fig.update_layout(legend={"orientation": "h", "y": -0.15})
    return base_layout(fig, title)


# ---------------------------------------------------------------- images: snapshots


def snapshot_indices(n_points: int, n_snapshots: int) -> np.ndarray:
    """Up to n_snapshots recorded points spread evenly from the first to the last."""
    return np.unique(np.linspace(0, n_points - 1, min(n_snapshots, n_points)).round().astype(int))


def _image_trace(image: np.ndarray, zrange: tuple[float, float]) -> go.BaseTraceType:
    """A (C, H, W) image: a grey heatmap for one channel (ink dark), an RGB image for three."""
    if image.shape[0] == 3:
        low, high = zrange
        rgb = np.clip((image - low) / ((high - low) or 1.0), 0, 1) * 255
        return go.Image(z=rgb.transpose(1, 2, 0).astype(np.uint8), hoverinfo="skip")
    return go.Heatmap(z=image.mean(axis=0), zmin=zrange[0], zmax=zrange[1], colorscale="Greys",
                      showscale=False, hovertemplate="%{z:.2f}<extra></extra>")


def snapshot_strip(path: LevelSetPath, *, n_snapshots: int = N_SNAPSHOTS, show_target: bool = True,
                   title: Optional[str] = None) -> go.Figure:
    """Snapshots of an image path, from source to end, with the confidence under each.

    Args:
        path: a traversal of images (its `input_shape` has height and width); one pair
            (for a batch, `path.pair(i)`).
        n_snapshots: how many recorded points to show, evenly spread.
        show_target: add the target as a last panel.
        title: the figure's title.
    """
    if path.batched:
        raise ValueError("Show one pair's snapshots: pass path.pair(i).")
    if path.input_shape is None or len(path.input_shape) < 2:
        raise ValueError("Snapshots need images: this path has no height and width.")
    shape = tuple(path.input_shape) if len(path.input_shape) == 3 else (1, *path.input_shape)
    images = path.path.reshape(-1, *shape)
    index = snapshot_indices(len(images), n_snapshots)
    panels = [images[k] for k in index]
    labels = [f"step {path.step[k]}<br>p {path.confidence[k]:.3f}" for k in index]
    if show_target:
        panels.append(np.asarray(path.target).reshape(shape))
        labels.append("target")
    bounds = path.settings.get("bounds")
    zrange = tuple(bounds) if bounds else (float(path.path.min()), float(path.path.max()))
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=labels, horizontal_spacing=0.01)
    for col, image in enumerate(panels, start=1):
        fig.add_trace(_image_trace(image, zrange), row=1, col=col)
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, constrain="domain")
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, autorange="reversed",
                     scaleanchor="x", constrain="domain")  # row 0 on top, square pixels
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
