"""Training curves: one run's loss and accuracy, and several runs compared on one axis."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from engine.results import History
from viz.style import SPLIT_COLORS, axis_scale, base_layout, class_color, no_data

__all__ = ["series", "block_means", "curve", "has_finite", "format_accuracy_axis", "line", "training_curves",
           "compare_curves", "MAX_LINE_POINTS", "MAX_EVAL_POINTS"]

# The minibatch loss is shown as at most this many points (block means, see `block_means`).
MAX_LINE_POINTS = 2000
# Evaluations get a marker each while there are at most this many; a longer run's are thinned
# to this many by block means too and drawn as a line. (A live page redraws its curves every
# few seconds: an endless run evaluated every 100 steps otherwise sends the browser thousands
# of markers per trace, more with every redraw.)
MAX_EVAL_POINTS = 400

# metric name -> (History field of the steps, History field of the values, readable name)
METRICS = {
    "train_loss": ("step", "train_loss", "minibatch train loss"),
    "eval_train_loss": ("eval_step", "eval_train_loss", "train loss"),
    "test_loss": ("eval_step", "test_loss", "test loss"),
    "eval_train_accuracy": ("eval_step", "eval_train_accuracy", "train accuracy"),
    "test_accuracy": ("eval_step", "test_accuracy", "test accuracy"),
}


def series(history: History, step_field: str, value_field: str) -> tuple[np.ndarray, np.ndarray]:
    """Steps and values of one metric as float arrays of equal length.

    A run that is still going may have appended to one list and not yet to the other; the
    longer one is cut to the shorter.
    """
    steps = np.asarray(getattr(history, step_field), dtype=float)
    values = np.asarray(getattr(history, value_field), dtype=float)
    n = min(len(steps), len(values))
    return steps[:n], values[:n]


def block_means(steps: np.ndarray, values: np.ndarray, max_points: int = MAX_LINE_POINTS):
    """Thin a long noisy series to at most `max_points` by averaging consecutive blocks.

    Each block of `ceil(n / max_points)` consecutive entries becomes one point: the mean step
    and the mean value of the block. Unlike striding this smooths the minibatch noise instead
    of sampling it. A block that holds a NaN or an infinity averages to NaN or infinity, so
    divergence stays visible.

    Args:
        steps, values: the series, of equal length.
        max_points: the most points to keep.
    """
    n = len(values)
    block = int(np.ceil(n / max_points)) if n else 1
    if block <= 1:
        return steps, values
    starts = np.arange(0, n, block)
    counts = np.diff(np.append(starts, n))
    with np.errstate(invalid="ignore"):
        return np.add.reduceat(steps, starts) / counts, np.add.reduceat(values, starts) / counts


def curve(history: History, step_field: str, value_field: str) -> tuple[np.ndarray, np.ndarray, bool]:
    """One metric as it is drawn: its steps, its values, and whether each value is a single
    evaluation (drawn with a marker) rather than a block mean.

    The minibatch loss (`step_field` "step") is thinned to MAX_LINE_POINTS; evaluations are kept
    while there are at most MAX_EVAL_POINTS and thinned to that many otherwise.
    """
    steps, values = series(history, step_field, value_field)
    if step_field == "step":
        return (*block_means(steps, values), False)
    if len(values) <= MAX_EVAL_POINTS:
        return steps, values, True
    return (*block_means(steps, values, MAX_EVAL_POINTS), False)


def has_finite(values: np.ndarray) -> bool:
    """Whether any entry is a finite number (accuracies are all NaN for regression)."""
    return bool(np.isfinite(values).any())


def format_accuracy_axis(fig: go.Figure, values: np.ndarray, **where) -> None:
    """Show accuracies as percentages on a fixed 0..100% axis when they are fractions.

    Args:
        fig: the figure.
        values: every accuracy plotted on the axis.
        **where: `row=..., col=...` for a subplot, nothing for a single axis.
    """
    finite = values[np.isfinite(values)]
    if finite.size and finite.max() <= 1.0:
        fig.update_yaxes(range=[0, 1.02], tickformat=".0%", **where)


def line(steps, values, *, name, color, markers=True, **kwargs) -> go.Scatter:
    """A curve over steps; `markers` adds a dot at each value (for sparse evaluations)."""
    return go.Scatter(
        x=steps, y=values, name=name, mode="lines+markers" if markers else "lines",
        line={"color": color, "width": 2 if markers else 1},
        marker={"size": 5, "color": color}, **kwargs,
    )


def training_curves(history: History, *, title: str | None = None, log_y: bool = True) -> go.Figure:
    """Loss and accuracy of one run against the step.

    The left panel shows the minibatch train loss at every step (thinned to at most
    MAX_LINE_POINTS points by block means, see `block_means`) as a thin line, and the
    evaluated train and test losses as lines with markers (thinned too past MAX_EVAL_POINTS
    evaluations, see `curve`). The right panel shows the evaluated train and test
    accuracies; it is left out when they are all NaN (regression). Train and test share a
    legend entry across the two panels.

    Args:
        history: what the run measured so far (may be empty).
        title: the figure's title.
        log_y: a logarithmic loss axis.
    """
    step, train_loss, _ = curve(history, "step", "train_loss")
    eval_step, eval_train_loss, each = curve(history, "eval_step", "eval_train_loss")
    test_step, test_loss, _ = curve(history, "eval_step", "test_loss")
    train_acc_step, train_acc, _ = curve(history, "eval_step", "eval_train_accuracy")
    test_acc_step, test_acc, _ = curve(history, "eval_step", "test_accuracy")
    accuracies = np.concatenate([train_acc, test_acc])

    if not (len(step) or len(eval_step) or len(test_step)):
        return base_layout(no_data(go.Figure()), title)

    show_accuracy = has_finite(accuracies)
    fig = make_subplots(
        rows=1, cols=2 if show_accuracy else 1,
        subplot_titles=("loss", "accuracy") if show_accuracy else ("loss",),
        horizontal_spacing=0.1,
    )
    train, test = SPLIT_COLORS["train"], SPLIT_COLORS["test"]
    fig.add_trace(line(step, train_loss, name="minibatch loss", color=train, markers=False,
                       opacity=0.4), row=1, col=1)
    fig.add_trace(line(eval_step, eval_train_loss, name="train", color=train, markers=each,
                       legendgroup="train"), row=1, col=1)
    fig.add_trace(line(test_step, test_loss, name="test", color=test, markers=each,
                       legendgroup="test"), row=1, col=1)
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(**axis_scale(log_y), row=1, col=1)

    if show_accuracy:
        fig.add_trace(line(train_acc_step, train_acc, name="train", color=train, markers=each,
                           legendgroup="train", showlegend=False), row=1, col=2)
        fig.add_trace(line(test_acc_step, test_acc, name="test", color=test, markers=each,
                           legendgroup="test", showlegend=False), row=1, col=2)
        format_accuracy_axis(fig, accuracies, row=1, col=2)
    return base_layout(fig, title)


def compare_curves(
    histories: dict[str, History],
    metric: str = "test_loss",
    *,
    log_y: bool | None = None,
    title: str | None = None,
) -> go.Figure:
    """One metric of several runs on one shared axis, one palette colour per run.

    Args:
        histories: run name -> its history; the names label the legend.
        metric: one of METRICS: "test_loss", "train_loss" (the minibatch loss),
            "eval_train_loss", "test_accuracy", "eval_train_accuracy"; long series are
            thinned by block means (see `curve`).
        log_y: a logarithmic y axis; None means yes for losses and no for accuracies.
        title: the figure's title; None names the metric.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {sorted(METRICS)}")
    step_field, value_field, metric_name = METRICS[metric]
    is_accuracy = metric.endswith("accuracy")
    if log_y is None:
        log_y = not is_accuracy
    title = metric_name if title is None else title

    fig = go.Figure()
    plotted = []
    for i, (name, history) in enumerate(histories.items()):
        steps, values, each = curve(history, step_field, value_field)
        fig.add_trace(line(steps, values, name=name, color=class_color(i), markers=each))
        plotted.append(values)

    values = np.concatenate(plotted) if plotted else np.array([])
    if not values.size:
        return base_layout(no_data(fig), title)
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text=metric_name, **axis_scale(log_y))
    if is_accuracy and not log_y:
        format_accuracy_axis(fig, values)
    return base_layout(fig, title)
