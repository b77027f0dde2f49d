"""Loss-landscape figures: contours with a training trajectory, 3-D surfaces, 1-D slices and
linear paths, Hessian eigenvalues over training and the Hessian's spectral density.

Every builder takes the plain results of `engine.landscape` and `engine.hessian` (from
`engine.results`, numpy only). `compare` draws several surfaces side by side on one colour
range and shared axes, so that sharper and flatter minima can be told apart by eye.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from engine.results import ConvexityMap, LinearPath, Sharpness, Surface, Trajectory
from viz.style import (
    DEFAULT_HEIGHT,
    OUTLINE_COLOR,
    REFERENCE_COLOR,
    SEQUENTIAL_SCALE,
    SPLIT_COLORS,
    axis_scale,
    base_layout,
    class_color,
)

__all__ = ["shown_values", "shared_range", "contour", "surface_3d", "compare", "curves", "sharpness",
           "spectral_density", "convexity", "LOG_FLOOR"]

N_LEVELS = 20  # contour levels
SURFACE_HEIGHT = 480  # 3-D figures need more room than flat ones
SURFACE_CAMERA = {"x": 0.5, "y": -1.7, "z": 1.3}  # from the contour's lower edge, a little to the right
SURFACE_Z = 0.6  # the 3-D box's height, against its longest side 1
MIN_SIDE = 0.5  # the shorter side of a 3-D plane, against its longest side 1
LOG_FLOOR = 1e-12  # losses at or below zero are shown at this value on a log scale


# ---------------------------------------------------------------- values and ranges


def shown_values(surface: Surface, log: bool = False, clip: Optional[float] = None) -> np.ndarray:
    """The loss values a figure shows: capped at `clip` first, then log10 when asked.

    Args:
        surface: the result to show.
        log: show log10 of the loss (a sharp minimum's floor stays visible).
        clip: cap the loss here, so a few huge values do not flatten the rest.
    """
    z = np.asarray(surface.loss, dtype=float)
    if clip is not None:
        z = np.minimum(z, clip)
    if log:
        z = np.log10(np.maximum(z, LOG_FLOOR))
    return z


def shared_range(surfaces: Sequence[Surface], log: bool = False,
                 clip: Optional[float] = None) -> tuple[float, float]:
    """(zmin, zmax) over the finite shown values of several surfaces: one colour range."""
    values = np.concatenate([shown_values(s, log, clip).ravel() for s in surfaces])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    return float(values.min()), float(values.max())


def _value_title(log: bool) -> str:
    return "log10 loss" if log else "loss"


# ---------------------------------------------------------------- 2-D and 3-D surfaces


def _contour_trace(surface: Surface, log: bool, clip: Optional[float],
                   zrange: Optional[tuple[float, float]], **kwargs) -> go.Contour:
    zmin, zmax = zrange if zrange is not None else shared_range([surface], log, clip)
    size = (zmax - zmin) / N_LEVELS or 1.0
    return go.Contour(
        x=surface.xs, y=surface.ys, z=shown_values(surface, log, clip),
        colorscale=SEQUENTIAL_SCALE, zmin=zmin, zmax=zmax,
        contours={"start": zmin, "end": zmax, "size": size},
        colorbar={"title": {"text": _value_title(log)}},
        hovertemplate="(%{x:.3g}, %{y:.3g})<br>" + _value_title(log) + " %{z:.4g}<extra></extra>",
        **kwargs,
    )


def _trajectory_trace(trajectory: Trajectory, **kwargs) -> go.Scatter:
    """The projected checkpoints as a line with markers, the first and last labelled."""
    n = len(trajectory.coords)
    labels = [""] * n
    labels[0], labels[-1] = "start", "end"
    hover = "step %{customdata[0]:.0f}<br>(%{x:.3g}, %{y:.3g})"
    customdata = np.asarray(trajectory.steps, dtype=float)[:, None]
    if trajectory.loss is not None and trajectory.loss_on_plane is not None:
        customdata = np.column_stack([customdata, trajectory.loss, trajectory.loss_on_plane])
        hover += "<br>loss %{customdata[1]:.4g}<br>loss on the plane %{customdata[2]:.4g}"
    return go.Scatter(
        x=trajectory.coords[:, 0], y=trajectory.coords[:, 1], mode="lines+markers+text",
        text=labels, textposition="top center", customdata=customdata,
        hovertemplate=hover + "<extra></extra>", name="trajectory", showlegend=False,
        line={"color": OUTLINE_COLOR, "width": 2},
        marker={"size": 6, "color": "white", "line": {"color": OUTLINE_COLOR, "width": 1.5}},
        **kwargs,
    )


def _marks_trace(surface: Surface, **kwargs) -> go.Scatter:
    """The surface's marked points (e.g. the models a plane passes through), with their names
    and the loss at each."""
    names = surface.mark_names or [f"point {i + 1}" for i in range(len(surface.marks))]
    return go.Scatter(
        x=surface.marks[:, 0], y=surface.marks[:, 1], mode="markers+text", text=names,
        textposition="top center", name="models", showlegend=False,
        hovertemplate="%{text}<br>(%{x:.3g}, %{y:.3g})<extra></extra>",
        marker={"size": 10, "symbol": "star", "color": "white",
                "line": {"color": OUTLINE_COLOR, "width": 1.5}},
        **kwargs,
    )


def _axis_titles(trajectory: Optional[Trajectory]) -> tuple[str, str]:
    """'PC1 (87% of the path)' for a trajectory's plane, 'direction 1' otherwise."""
    if trajectory is None:
        return "direction 1", "direction 2"
    share = trajectory.explained_variance
    return f"PC1 ({share[0]:.0%} of the path)", f"PC2 ({share[1]:.0%} of the path)"


def contour(surface: Surface, trajectory: Optional[Trajectory] = None, *, log: bool = False,
            clip: Optional[float] = None, zrange: Optional[tuple[float, float]] = None,
            title: Optional[str] = None) -> go.Figure:
    """The loss over a plane as filled contours, with a projected trajectory and the
    surface's marks (the models a plane passes through) on top.

    Args:
        surface: a 2-D `Surface`.
        trajectory: checkpoints projected onto the same plane (from `pca_directions` or
            `trajectory_faithfulness`), drawn as a line from "start" to "end".
        log, clip: see `shown_values`.
        zrange: (zmin, zmax) of the colours and levels; from this surface by default.
        title: the figure's title.
    """
    fig = go.Figure(_contour_trace(surface, log, clip, zrange))
    if trajectory is not None:
        fig.add_trace(_trajectory_trace(trajectory))
    if surface.marks is not None:
        fig.add_trace(_marks_trace(surface))
    x_title, y_title = _axis_titles(trajectory)
    fig.update_xaxes(title_text=x_title, range=[surface.xs[0], surface.xs[-1]])
    fig.update_yaxes(title_text=y_title, range=[surface.ys[0], surface.ys[-1]])
    return base_layout(fig, title)


def _surface_trace(surface: Surface, log: bool, clip: Optional[float],
                   zrange: Optional[tuple[float, float]], **kwargs) -> go.Surface:
    zmin, zmax = zrange if zrange is not None else shared_range([surface], log, clip)
    return go.Surface(
        x=surface.xs, y=surface.ys, z=shown_values(surface, log, clip),
        colorscale=SEQUENTIAL_SCALE, cmin=zmin, cmax=zmax,
        colorbar={"title": {"text": _value_title(log)}}, **kwargs,
    )


def _scene(surface: Surface, log: bool, zrange: Optional[tuple[float, float]]) -> dict:
    """The 3-D axes of a surface, seen as its contour is. By default plotly draws a box with
    three equal sides and looks from the far corner of the plane: a plane twice as long as it
    is wide is squeezed and a corner's rise, seen edge-on across the valley, looks like a sharp
    spike the contour does not have. Here the plane keeps its proportions and the camera looks
    from the contour's lower edge, direction 1 running left to right as on the contour."""
    z_axis = {"title": {"text": _value_title(log)}}
    if zrange is not None:
        z_axis["range"] = list(zrange)
    return {"xaxis": {"title": {"text": "direction 1"}},
            "yaxis": {"title": {"text": "direction 2"}, "nticks": 4}, "zaxis": z_axis,  # few: seen end-on
            "aspectmode": "manual", "aspectratio": _plane_aspect(surface),
            "camera": {"eye": dict(SURFACE_CAMERA)}}


def _plane_aspect(surface: Surface) -> dict:
    """The lengths of the 3-D box: the plane's two sides in proportion (the shorter no less
    than MIN_SIDE of the longer, so its ticks stay readable) and a fixed height."""
    width, depth = float(np.ptp(surface.xs)), float(np.ptp(surface.ys))
    longest = max(width, depth) or 1.0
    return {"x": max(width / longest, MIN_SIDE), "y": max(depth / longest, MIN_SIDE), "z": SURFACE_Z}


def surface_3d(surface: Surface, *, log: bool = False, clip: Optional[float] = None,
               zrange: Optional[tuple[float, float]] = None,
               title: Optional[str] = None) -> go.Figure:
    """The loss over a plane as a 3-D surface (drag to turn it).

    Args:
        surface: a 2-D `Surface`.
        log, clip: see `shown_values`; clipping is what keeps the walls of a sharp minimum
            from hiding its floor.
        zrange: (zmin, zmax) of the colours and the vertical axis; from the data by default.
    """
    fig = go.Figure(_surface_trace(surface, log, clip, zrange))
    fig.update_layout(scene=_scene(surface, log, zrange))
    base_layout(fig, title, height=SURFACE_HEIGHT)
    fig.update_layout(margin={"l": 0, "r": 0, "b": 0})
    return fig


# ---------------------------------------------------------------- compare mode


def compare(surfaces: Sequence[Surface], titles: Optional[Sequence[str]] = None, *,
            kind: str = "contour", trajectories: Optional[Sequence[Optional[Trajectory]]] = None,
            log: bool = False, clip: Optional[float] = None) -> go.Figure:
    """Several surfaces side by side, on one colour range and shared axes.

    Args:
        surfaces: two to four 2-D surfaces (e.g. one per run).
        titles: one per surface.
        kind: "contour" or "surface" (3-D).
        trajectories: for contours, one trajectory (or None) per surface.
        log, clip: see `shown_values`.
    """
    if kind not in ("contour", "surface"):
        raise ValueError(f"kind must be 'contour' or 'surface', not {kind!r}.")
    n = len(surfaces)
    zrange = shared_range(surfaces, log, clip)
    spec = {"type": "scene"} if kind == "surface" else {}
    fig = make_subplots(rows=1, cols=n, subplot_titles=list(titles) if titles else None,
                        specs=[[spec] * n], shared_yaxes=kind == "contour",
                        horizontal_spacing=0.04)
    for i, s in enumerate(surfaces, start=1):
        shared = {"showscale": i == n}  # one colour bar for all: they share the range
        if kind == "surface":
            fig.add_trace(_surface_trace(s, log, clip, zrange, **shared), row=1, col=i)
            fig.update_layout({f"scene{'' if i == 1 else i}": _scene(s, log, zrange)})
            continue
        fig.add_trace(_contour_trace(s, log, clip, zrange, **shared), row=1, col=i)
        if trajectories is not None and trajectories[i - 1] is not None:
            fig.add_trace(_trajectory_trace(trajectories[i - 1]), row=1, col=i)
        if s.marks is not None:
            fig.add_trace(_marks_trace(s), row=1, col=i)
    if kind == "contour":
        xs = np.concatenate([s.xs for s in surfaces])
        ys = np.concatenate([s.ys for s in surfaces])
        fig.update_xaxes(range=[xs.min(), xs.max()], matches="x", title_text="direction 1")
        fig.update_yaxes(range=[ys.min(), ys.max()], matches="y")
        fig.update_yaxes(title_text="direction 2", row=1, col=1)
    return base_layout(fig, height=SURFACE_HEIGHT if kind == "surface" else DEFAULT_HEIGHT)


# ---------------------------------------------------------------- 1-D slices and paths


def curves(train: Surface | LinearPath, test: Surface | LinearPath | None = None, *,
           x_title: str = "step along the direction", log_y: bool = False,
           title: Optional[str] = None) -> go.Figure:
    """Loss (and accuracy, for classification) along a line: a 1-D slice or a linear path.

    Train and test are separate traces in the split colours; the accuracy panel appears when
    the results have accuracies. A linear path's barrier is given in the default title.

    Args:
        train: the curve on the training data (a 1-D `Surface` or a `LinearPath`).
        test: the same line on the test data, or None.
        x_title: what the horizontal coordinate is ("t" for a linear path).
        log_y: a log scale for the loss.
    """
    splits = {"train": train} if test is None else {"train": train, "test": test}
    with_accuracy = any(c.accuracy is not None for c in splits.values())
    fig = make_subplots(rows=1, cols=2 if with_accuracy else 1,
                        subplot_titles=("loss", "accuracy") if with_accuracy else None)
    for split, c in splits.items():
        style = {"mode": "lines+markers", "marker": {"size": 4}, "legendgroup": split}
        color = SPLIT_COLORS[split]
        fig.add_trace(go.Scatter(x=c.xs, y=c.loss, name=f"{split} loss", line={"color": color},
                                 **style), row=1, col=1)
        if c.accuracy is not None:
            fig.add_trace(go.Scatter(x=c.xs, y=c.accuracy, name=f"{split} accuracy",
                                     line={"color": color, "dash": "dot"}, **style), row=1, col=2)
    fig.update_xaxes(title_text=x_title)
    fig.update_yaxes(**axis_scale(log_y), row=1, col=1)
    if title is None and isinstance(train, LinearPath):
        title = ", ".join(f"{split} barrier {c.barrier:.3g}" for split, c in splits.items())
    return base_layout(fig, title)


# ---------------------------------------------------------------- curvature


def sharpness(result: Sharpness, *, title: Optional[str] = None) -> go.Figure:
    """The Hessian's top eigenvalues over training, with the edge of stability 2 / lr.

    Under gradient descent the top eigenvalue climbs to about 2 / lr and hovers there
    (Cohen et al. 2021).
    """
    fig = go.Figure()
    for k in range(result.eigenvalues.shape[1]):
        fig.add_trace(go.Scatter(x=result.steps, y=result.eigenvalues[:, k], name=f"lambda {k + 1}",
                                 mode="lines+markers", line={"color": class_color(k)},
                                 marker={"size": 4}))
    if result.lr:
        fig.add_hline(y=2.0 / result.lr, line={"color": REFERENCE_COLOR, "dash": "dash"},
                      annotation_text="2 / lr", annotation_position="top left")
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text="Hessian eigenvalue")
    return base_layout(fig, title)


def spectral_density(grid: np.ndarray, density: np.ndarray, *, log: bool = True,
                     title: Optional[str] = None) -> go.Figure:
    """The Hessian's eigenvalue density (from stochastic Lanczos quadrature).

    Args:
        grid, density: from `engine.hessian.density`.
        log: a log scale for the density, which shows the small outliers next to the bulk.
    """
    density = np.asarray(density, dtype=float)
    if log:  # a log axis cannot show zeros: floor the far tails
        density = np.maximum(density, density.max() * 1e-8 if density.size else LOG_FLOOR)
    fig = go.Figure(go.Scatter(x=grid, y=density, mode="lines", fill="tozeroy",
                               line={"color": SPLIT_COLORS["train"]}, name="density"))
    fig.update_xaxes(title_text="eigenvalue")
    fig.update_yaxes(title_text="density", **axis_scale(log))
    return base_layout(fig, title)


def convexity(result: ConvexityMap, *, title: Optional[str] = None) -> go.Figure:
    """|lambda_min / lambda_max| over a plane: dark where the surface is nearly convex."""
    customdata = np.stack([result.lambda_max, result.lambda_min], axis=-1)
    fig = go.Figure(go.Heatmap(
        x=result.xs, y=result.ys, z=result.ratio, colorscale=SEQUENTIAL_SCALE,
        colorbar={"title": {"text": "|λmin / λmax|"}}, customdata=customdata,
        hovertemplate=("(%{x:.3g}, %{y:.3g})<br>ratio %{z:.3g}<br>λmax %{customdata[0]:.4g}"
                       "<br>λmin %{customdata[1]:.4g}<extra></extra>"),
    ))
    fig.update_xaxes(title_text="direction 1")
    fig.update_yaxes(title_text="direction 2")
    return base_layout(fig, title)
