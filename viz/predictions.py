"""What a model predicts: decision regions, 1-D function fits, confusion matrices, parity plots.

`prediction_figure(view)` is the one entry point pages need: it picks the builder from the
type of the result.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from engine.results import Confusion, DecisionRegions, FunctionFit, Parity
from viz.style import (
    COUNT_SCALE,
    OUTLINE_COLOR,
    REFERENCE_COLOR,
    SPLIT_COLORS,
    base_layout,
    class_color,
    class_rgb,
    equal_aspect,
    scatter_trace,
    value_color_axis,
)

__all__ = ["grid_step", "confidence_tint", "region_image", "class_points", "value_points", "decision_regions",
           "function_fit", "accuracy", "confusion_matrix", "r_squared", "parity", "prediction_figure"]

# Background tint of a decision region: the share of the class colour (the rest is white)
# at chance confidence and at full confidence. Below 1 so that points stay visible on top.
TINT_AT_CHANCE = 0.08
TINT_AT_CERTAINTY = 0.6

POINT_SIZE = 7
WHITE = np.array([255.0, 255.0, 255.0])


# ---- decision regions ------------------------------------------------------------------------


def grid_step(coords: np.ndarray) -> float:
    """The spacing of an evenly spaced grid (1 for a grid of one point)."""
    coords = np.asarray(coords, dtype=float)
    return float((coords[-1] - coords[0]) / (len(coords) - 1)) if len(coords) > 1 else 1.0


def confidence_tint(confidence: np.ndarray, n_classes: int) -> np.ndarray:
    """How much class colour each cell gets: TINT_AT_CHANCE at 1/C up to TINT_AT_CERTAINTY at 1.

    Args:
        confidence: probabilities of the predicted class, any shape.
        n_classes: C; with one class every cell is certain.
    """
    if n_classes <= 1:
        certainty = np.ones_like(confidence, dtype=float)
    else:
        chance = 1.0 / n_classes
        certainty = np.clip((np.asarray(confidence, dtype=float) - chance) / (1 - chance), 0, 1)
    certainty = np.nan_to_num(certainty, nan=0.0)
    return TINT_AT_CHANCE + (TINT_AT_CERTAINTY - TINT_AT_CHANCE) * certainty


def region_image(classes: np.ndarray, confidence: np.ndarray, n_classes: int) -> np.ndarray:
    """An (Gy, Gx, 3) uint8 RGB image: each cell's class colour blended towards white as its
    confidence drops to chance.

    Args:
        classes: (Gy, Gx) predicted class per cell.
        confidence: (Gy, Gx) probability of that class.
        n_classes: the number of classes (the palette size used).
    """
    classes = np.asarray(classes).astype(int)
    palette = class_rgb(max(n_classes, int(classes.max(initial=0)) + 1))
    tint = confidence_tint(confidence, n_classes)[..., None]
    rgb = WHITE + tint * (palette[classes] - WHITE)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def class_points(points: np.ndarray, labels: np.ndarray, n_classes: int) -> list:
    """One scatter trace per class, in the class colour with a dark outline.

    Every class in range(n_classes) gets a trace (possibly empty) so the legend stays put
    while a view is refreshed.
    """
    labels = np.asarray(labels).astype(int)
    n_traces = max(n_classes, int(labels.max(initial=-1)) + 1)
    traces = []
    for k in range(n_traces):
        mine = points[labels == k]
        traces.append(scatter_trace(
            len(points), x=mine[:, 0], y=mine[:, 1], mode="markers", name=f"class {k}",
            marker={"color": class_color(k), "size": POINT_SIZE,
                    "line": {"color": OUTLINE_COLOR, "width": 1}},
        ))
    return traces


def value_points(points: np.ndarray, targets: np.ndarray) -> go.Scatter | go.Scattergl:
    """Points coloured by their target on the figure's shared colour axis."""
    return scatter_trace(
        len(points), x=points[:, 0], y=points[:, 1], mode="markers", name="data",
        marker={"color": targets, "coloraxis": "coloraxis", "size": POINT_SIZE,
                "line": {"color": OUTLINE_COLOR, "width": 1}},
        hovertemplate="x1 %{x:.3g}<br>x2 %{y:.3g}<br>target %{marker.color:.3g}<extra></extra>",
    )


def decision_regions(view: DecisionRegions, *, title: str | None = None) -> go.Figure:
    """The model's prediction over a 2-D grid with the data points on top.

    Classification (like TensorFlow Playground): an RGB image of the predicted class in
    the class palette, paler where the model is less confident, with the points in their
    label's colour. Regression: a heatmap of the predicted value with the points coloured
    by their target on the same colour scale (diverging around zero when the values have
    both signs). The grid is assumed evenly spaced, as `np.linspace` makes it.

    Args:
        view: the grid predictions and the points.
        title: the figure's title.
    """
    points = np.asarray(view.points, dtype=float).reshape(-1, 2)
    fig = go.Figure()
    if view.task == "classification":
        fig.add_trace(go.Image(
            z=region_image(view.value, view.confidence, view.n_classes),
            x0=float(view.grid_x[0]), dx=grid_step(view.grid_x),
            y0=float(view.grid_y[0]), dy=grid_step(view.grid_y),
            hoverinfo="skip", name="prediction",
        ))
        fig.add_traces(class_points(points, view.labels, view.n_classes))
    else:
        fig.add_trace(go.Heatmap(
            x=view.grid_x, y=view.grid_y, z=view.value, coloraxis="coloraxis",
            name="prediction",
            hovertemplate="x1 %{x:.3g}<br>x2 %{y:.3g}<br>prediction %{z:.3g}<extra></extra>",
        ))
        fig.add_trace(value_points(points, view.labels))
        fig.update_layout(coloraxis=value_color_axis(view.value, view.labels))

    # Image traces turn the y axis upside down unless its direction is given.
    half_x, half_y = grid_step(view.grid_x) / 2, grid_step(view.grid_y) / 2
    fig.update_xaxes(range=[view.grid_x[0] - half_x, view.grid_x[-1] + half_x])
    fig.update_yaxes(range=[view.grid_y[0] - half_y, view.grid_y[-1] + half_y])
    equal_aspect(fig)
    return base_layout(fig, title, height=460)


# ---- 1-D function fit ------------------------------------------------------------------------


def function_fit(view: FunctionFit, *, title: str | None = None) -> go.Figure:
    """The model's output along one coordinate against the target function and the data.

    Args:
        view: prediction (solid line), target (dashed, when known) and training points.
        title: the figure's title.
    """
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=view.x, y=view.prediction, mode="lines", name="prediction",
                             line={"color": SPLIT_COLORS["train"], "width": 3}))
    fig.add_trace(scatter_trace(
        len(view.points_x), x=view.points_x, y=view.points_y, mode="markers", name="data",
        marker={"color": SPLIT_COLORS["test"], "size": 5,
                "line": {"color": OUTLINE_COLOR, "width": 0.5}},
    ))
    if view.target is not None:  # last and of the points' kind (SVG or WebGL): drawn over them
        fig.add_trace(scatter_trace(len(view.points_x), x=view.x, y=view.target, mode="lines", name="target",
                                    line={"color": REFERENCE_COLOR, "dash": "dash", "width": 2}))
    fig.update_xaxes(title_text=view.x_label)
    fig.update_yaxes(title_text="y")
    return base_layout(fig, title)


# ---- confusion matrix ------------------------------------------------------------------------


def accuracy(matrix: np.ndarray) -> float:
    """The share of counts on the diagonal; NaN for an empty matrix."""
    total = matrix.sum()
    return float(np.trace(matrix) / total) if total else float("nan")


def confusion_matrix(view: Confusion, *, title: str | None = None) -> go.Figure:
    """An annotated heatmap of counts: rows are the true class, columns the predicted one.

    The title ends with the accuracy (the diagonal's share of all counts).

    Args:
        view: the (C, C) counts and the class names.
        title: the start of the figure's title; "confusion matrix" when None.
    """
    matrix = np.asarray(view.matrix)
    labels = [str(label) for label in view.labels]
    acc = accuracy(matrix)
    acc_text = "accuracy n/a" if np.isnan(acc) else f"accuracy {acc:.1%}"
    fig = go.Figure(go.Heatmap(
        z=matrix, x=labels, y=labels, colorscale=COUNT_SCALE, texttemplate="%{z}",
        hovertemplate="true %{y}<br>predicted %{x}<br>count %{z}<extra></extra>",
        colorbar={"title": {"text": "count"}},
    ))
    fig.update_xaxes(title_text="predicted", type="category", side="bottom")
    fig.update_yaxes(title_text="true", type="category", autorange="reversed",
                     scaleanchor="x", scaleratio=1, constrain="domain")
    fig.update_xaxes(constrain="domain")
    height = int(np.clip(140 + 32 * len(labels), 300, 560))
    return base_layout(fig, f"{title or 'confusion matrix'} — {acc_text}", height=height)


# ---- parity ----------------------------------------------------------------------------------


def r_squared(target: np.ndarray, prediction: np.ndarray) -> float:
    """The coefficient of determination 1 - SS_res / SS_tot; NaN when the target is constant."""
    residual = np.sum((target - prediction) ** 2)
    spread = np.sum((target - target.mean()) ** 2) if target.size else 0.0
    return float(1 - residual / spread) if spread > 0 else float("nan")


def parity(view: Parity, *, title: str | None = None) -> go.Figure:
    """Predicted against true targets with the line y = x; R^2 ends the title.

    Args:
        view: targets and predictions on the test split.
        title: the start of the figure's title; "parity" when None.
    """
    target = np.asarray(view.target, dtype=float).ravel()
    prediction = np.asarray(view.prediction, dtype=float).ravel()
    r2 = r_squared(target, prediction)
    r2_text = "R² n/a" if np.isnan(r2) else f"R² = {r2:.3f}"

    fig = go.Figure(scatter_trace(
        len(target), x=target, y=prediction, mode="markers", name="test points",
        marker={"color": SPLIT_COLORS["train"], "size": 5, "opacity": 0.7},
        hovertemplate="true %{x:.3g}<br>predicted %{y:.3g}<extra></extra>",
    ))
    both = np.concatenate([target, prediction])
    both = both[np.isfinite(both)]
    if both.size:  # last and of the points' kind (SVG or WebGL): drawn over them
        low, high = float(both.min()), float(both.max())
        fig.add_trace(scatter_trace(len(target), x=[low, high], y=[low, high], mode="lines", name="y = x",
                                    line={"color": REFERENCE_COLOR, "dash": "dash", "width": 1}))
    equal_aspect(fig, x_title="true", y_title="predicted")
    return base_layout(fig, f"{title or 'parity'} — {r2_text}", height=420)


# ---- dispatch --------------------------------------------------------------------------------

BUILDERS = {
    DecisionRegions: decision_regions,
    FunctionFit: function_fit,
    Confusion: confusion_matrix,
    Parity: parity,
}


def prediction_figure(view, **kwargs) -> go.Figure:
    """The figure for any prediction result: picks the builder from the view's type.

    Args:
        view: a DecisionRegions, FunctionFit, Confusion or Parity.
        **kwargs: passed to the builder (e.g. title=...).
    """
    for kind, builder in BUILDERS.items():
        if isinstance(view, kind):
            return builder(view, **kwargs)
    raise TypeError(f"no figure for {type(view).__name__}; expected one of "
                    f"{', '.join(k.__name__ for k in BUILDERS)}")
