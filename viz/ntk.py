"""Figures of the empirical NTK: its spectrum, eigenfunctions, fit to the task, the per-mode
learning curves it predicts, and how much it moves during training (lazy versus rich)."""
from __future__ import annotations

import math
from typing import Mapping, Optional

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from engine.results import (
    Eigenfunctions,
    ExtremeSamples,
    FourierContent,
    KernelSpectrum,
    KernelTrajectory,
    LayerKernels,
    ModeCurves,
    TargetPower,
    TargetPowerTrajectory,
)
from viz.style import (
    DIVERGING_SCALE,
    OUTLINE_COLOR,
    REFERENCE_COLOR,
    SEQUENTIAL_SCALE,
    axis_scale,
    base_layout,
    class_color,
    image_trace,
    no_data,
)

__all__ = ["power_law_fit", "spectrum_figure", "eigenfunctions_figure", "extreme_samples_figure", "fourier_figure",
           "layer_kernels_figure", "target_power_figure", "target_power_trajectory_figure", "mode_curves_figure",
           "kernel_trajectory_figure"]

PANEL_HEIGHT = 190  # pixels per row of small multiples
SAMPLE_ROW_HEIGHT = 120  # pixels per eigenvector in the extreme samples
NOISE_FLOOR = 1e-10  # eigenvalues below this share of the largest are rounding noise


# ---------------------------------------------------------------- spectrum


def power_law_fit(values: np.ndarray, fit_from: int = 2, fit_to: Optional[int] = None) -> tuple[float, float]:
    """Fit lambda_i = c * i^(-p) by least squares on log lambda against log i.

    Args:
        values: eigenvalues, largest first (index i counts from 1).
        fit_from: the first index fitted (the top eigenvalue, often the constant mode, is
            left out by default).
        fit_to: the last index fitted; by default half the eigenvalues above the noise
            floor, since the tail of an empirical spectrum reflects the finite sample.

    Returns:
        (p, c): the decay exponent and the coefficient; NaNs with fewer than two points.
    """
    values = np.asarray(values, dtype=float)
    index, kept = _fit_range(values, fit_from, fit_to)
    if len(index) < 2:
        return math.nan, math.nan
    slope, intercept = np.polyfit(np.log(index), np.log(kept), 1)
    return float(-slope), float(np.exp(intercept))


def _above_noise(values: np.ndarray) -> np.ndarray:
    """Which eigenvalues are above the noise floor (none when the largest is not positive)."""
    if len(values) == 0 or values[0] <= 0:
        return np.zeros(len(values), dtype=bool)
    return values > NOISE_FLOOR * values[0]


def _fit_range(values: np.ndarray, fit_from: int, fit_to: Optional[int]):
    """The 1-based indices and values of the fitted part of a spectrum (above the noise)."""
    above = int(_above_noise(values).sum())
    last = min(fit_to if fit_to is not None else max(above // 2, fit_from + 1), above)
    index = np.arange(fit_from, last + 1)
    return index, values[index - 1]


def spectrum_figure(spectrum: KernelSpectrum, fit_from: int = 2, fit_to: Optional[int] = None,
                    title: Optional[str] = "NTK spectrum") -> go.Figure:
    """Eigenvalue against its rank on log-log axes, with a fitted power law and its exponent.

    Args:
        spectrum: the eigenvalues, largest first.
        fit_from, fit_to: the fitted index range (see `power_law_fit`).
        title: the figure's title.
    """
    fig = go.Figure()
    values = np.asarray(spectrum.values, dtype=float)
    positive = _above_noise(values)
    if not positive.any():
        return base_layout(no_data(fig, "no positive eigenvalues"), title)
    rank = np.arange(1, len(values) + 1)
    fig.add_trace(go.Scatter(x=rank[positive], y=values[positive], mode="lines+markers", name="eigenvalue",
                             marker={"size": 5, "color": class_color(0)}, line={"color": class_color(0)}))
    exponent, coefficient = power_law_fit(values, fit_from, fit_to)
    if math.isfinite(exponent):
        index, _ = _fit_range(values, fit_from, fit_to)
        fig.add_trace(go.Scatter(
            x=index, y=coefficient * index.astype(float) ** -exponent, mode="lines",
            # the fitted ranks and the number of points: a spectrum of other points fits otherwise
            name=f"fit: k^-{exponent:.2f} (ranks {index[0]}-{index[-1]} of {len(values)})",
            line={"dash": "dash", "color": REFERENCE_COLOR},
        ))
    fig.update_xaxes(**axis_scale(True), title_text="rank k")
    fig.update_yaxes(**axis_scale(True), title_text=f"eigenvalue ({spectrum.kind} kernel)", exponentformat="power")
    return base_layout(fig, title)


# ---------------------------------------------------------------- eigenfunctions


def eigenfunctions_figure(ef: Eigenfunctions, columns: int = 4,
                          title: Optional[str] = "NTK eigenfunctions") -> go.Figure:
    """Small multiples of the top eigenfunctions: heatmaps over a plane, curves along a line.

    Each panel has its own colour range, symmetric about zero (an eigenfunction's scale and
    sign are arbitrary); the panel title gives the eigenvalue.

    Args:
        ef: the eigenfunctions over a grid.
        columns: panels per row.
        title: the figure's title.
    """
    k = len(ef.values)
    if k == 0:
        return base_layout(no_data(go.Figure()), title)
    columns = min(columns, k)
    rows = math.ceil(k / columns)
    names = [f"φ{i + 1}  (λ = {v:.3g})" for i, v in enumerate(ef.values)]
    fig = make_subplots(rows=rows, cols=columns, subplot_titles=names,
                        horizontal_spacing=0.04, vertical_spacing=0.12 if rows > 1 else 0.0)
    for i in range(k):
        row, col = i // columns + 1, i % columns + 1
        fig.add_trace(_eigenfunction_trace(ef, i), row=row, col=col)
    if ef.grid_y is not None:
        fig.update_xaxes(showticklabels=False)
        fig.update_yaxes(showticklabels=False)
    else:
        fig.update_xaxes(title_text=ef.x_label, row=rows)
    return base_layout(fig, title, height=60 + PANEL_HEIGHT * rows)


def _eigenfunction_trace(ef: Eigenfunctions, i: int):
    values = np.asarray(ef.functions[i], dtype=float)
    if ef.grid_y is None:
        return go.Scatter(x=ef.grid_x, y=values, mode="lines", showlegend=False,
                          line={"color": class_color(i)}, name=f"φ{i + 1}")
    bound = float(np.max(np.abs(values))) or 1.0
    return go.Heatmap(z=values, x=ef.grid_x, y=ef.grid_y, colorscale=DIVERGING_SCALE,
                      zmin=-bound, zmax=bound, showscale=False, name=f"φ{i + 1}")


# ---------------------------------------------------------------- eigenvectors over samples


def extreme_samples_figure(samples: ExtremeSamples, max_rows: int = 6,
                           title: Optional[str] = "Samples at the ends of the top eigenvectors") -> go.Figure:
    """One row per eigenvector: the samples with its most negative entries on the left, its
    most positive on the right. Images (samples of height and width, like digits) are grey
    heatmaps on one shared scale; signals (one axis, like MNIST-1D) are curves, blue at the
    negative end and red at the positive. Each panel is titled with the sample's label.

    Args:
        samples: the extreme samples of each eigenvector.
        max_rows: show at most this many eigenvectors (the largest eigenvalues).
        title: the figure's title.
    """
    inputs = np.asarray(samples.inputs, dtype=float)
    rows = min(max_rows, inputs.shape[0])
    if rows == 0:
        return base_layout(no_data(go.Figure()), title)
    columns = inputs.shape[1]
    shape = tuple(d for d in inputs.shape[2:] if d != 1)  # the sample's axes, channels of one dropped
    images = len(shape) == 2 or (len(inputs.shape[2:]) == 3 and inputs.shape[2] == 3)
    names = [_sample_title(samples.labels[i, j], samples.entries[i, j]) for i in range(rows) for j in range(columns)]
    fig = make_subplots(rows=rows, cols=columns, subplot_titles=names, horizontal_spacing=0.02,
                        vertical_spacing=0.3 / rows)
    zrange = (float(inputs.min()), float(inputs.max()))
    for i in range(rows):
        for j in range(columns):
            sample = inputs[i, j]
            trace = (image_trace(sample.reshape(-1, *sample.shape[-2:]), zrange) if images
                     else _signal_trace(sample.reshape(-1), negative=j < columns // 2))
            fig.add_trace(trace, row=i + 1, col=j + 1)
        fig.update_yaxes(title_text=f"φ{i + 1}<br>λ={samples.values[i]:.3g}", row=i + 1, col=1)
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False)
    if images:
        _square_pixels(fig)
    else:
        fig.update_yaxes(range=[zrange[0], zrange[1]])
    fig.update_xaxes(title_text="most negative", row=rows, col=1)
    fig.update_xaxes(title_text="most positive", row=rows, col=columns)
    fig.update_annotations(font_size=10)
    return base_layout(fig, title, height=80 + SAMPLE_ROW_HEIGHT * rows)


def _sample_title(label, entry) -> str:
    label = float(label)
    if not np.isfinite(label):
        return f"{entry:+.2f}"
    return f"{int(label) if label.is_integer() else f'{label:.2g}'}  ({entry:+.2f})"


def _signal_trace(signal: np.ndarray, negative: bool) -> go.Scatter:
    color = class_color(0) if negative else class_color(2)  # blue for the negative end, red for the positive
    return go.Scatter(y=signal, mode="lines", line={"color": color, "width": 1.5}, showlegend=False,
                      hovertemplate="%{y:.2f}<extra></extra>")


def _square_pixels(fig: go.Figure) -> None:
    """Each image panel: row 0 on top and square pixels (its y axis scaled to its own x)."""
    for trace in fig.data:
        x_axis, y_axis = trace.xaxis or "x", trace.yaxis or "y"
        fig.layout["yaxis" + y_axis[1:]].update(autorange="reversed", scaleanchor=x_axis, constrain="domain")
        fig.layout["xaxis" + x_axis[1:]].update(constrain="domain")


# ---------------------------------------------------------------- Fourier content


def fourier_figure(content: FourierContent,
                   title: Optional[str] = "Fourier content of the eigenfunctions") -> go.Figure:
    """The share of each eigenfunction's power at each frequency (a heatmap, φ1 on top), with
    its dominant frequency marked: under spectral bias the marks step to the right.

    Args:
        content: the shares per eigenfunction and frequency.
        title: the figure's title.
    """
    power = np.asarray(content.power, dtype=float)
    if power.size == 0:
        return base_layout(no_data(go.Figure()), title)
    names = [f"φ{i + 1}" for i in range(len(power))]
    frequencies = np.asarray(content.frequencies)
    fig = go.Figure(go.Heatmap(
        z=power, x=frequencies, y=names, colorscale=SEQUENTIAL_SCALE, zmin=0, zmax=1,
        colorbar={"title": {"text": "share"}, "thickness": 12},
        hovertemplate="%{y}, frequency %{x}: %{z:.1%}<extra></extra>",
    ))
    dominant = np.asarray(content.dominant)
    shown = dominant <= frequencies[-1]
    fig.add_trace(go.Scatter(
        x=dominant[shown], y=np.asarray(names)[shown], mode="markers", name="dominant frequency",
        marker={"symbol": "circle-open", "size": 12, "color": OUTLINE_COLOR, "line": {"width": 2}},
    ))
    unit = "cycles around the circle" if content.periodic else "half-cycles over the span"
    fig.update_xaxes(title_text=f"frequency ({unit})", dtick=1 if len(frequencies) <= 20 else None,
                     range=[frequencies[0] - 0.5, frequencies[-1] + 0.5])
    fig.update_yaxes(autorange="reversed", title_text="eigenfunction")
    fig.update_layout(legend={"orientation": "h", "y": -0.3})
    return base_layout(fig, title)


# ---------------------------------------------------------------- layer by layer


def layer_kernels_figure(layers: LayerKernels, title: Optional[str] = "The kernel layer by layer") -> go.Figure:
    """Left: each layer's share of the kernel's trace. Right: each layer's spectrum (log-log)
    beside the whole kernel's (dashed); the parts add up to the whole.

    Args:
        layers: the per-layer traces and spectra.
        title: the figure's title.
    """
    traces = np.asarray(layers.traces, dtype=float)
    if traces.size == 0 or traces.sum() <= 0:
        return base_layout(no_data(go.Figure()), title)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("share of the trace", "spectrum per layer"),
                        horizontal_spacing=0.14, column_widths=[0.4, 0.6])
    names = [str(name) for name in layers.layers]
    colors = [class_color(i) for i in range(len(names))]
    fig.add_trace(go.Bar(x=names, y=traces / traces.sum(), marker={"color": colors}, showlegend=False,
                         hovertemplate="%{x}: %{y:.1%}<extra></extra>"), row=1, col=1)
    for name, values, color in zip(names, np.asarray(layers.values, dtype=float), colors):
        _log_spectrum(fig, values, name, {"color": color})
    _log_spectrum(fig, np.asarray(layers.total_values, dtype=float), "whole kernel",
                  {"color": REFERENCE_COLOR, "dash": "dash"})
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%", row=1, col=1)
    fig.update_xaxes(**axis_scale(True), title_text="rank k", row=1, col=2)
    fig.update_yaxes(**axis_scale(True), exponentformat="power", row=1, col=2)
    return base_layout(fig, title)


def _log_spectrum(fig: go.Figure, values: np.ndarray, name: str, line: dict) -> None:
    positive = _above_noise(values)
    rank = np.arange(1, len(values) + 1)
    fig.add_trace(go.Scatter(x=rank[positive], y=values[positive], mode="lines", name=name, line=line),
                  row=1, col=2)


# ---------------------------------------------------------------- fit to the task


def target_power_figure(power: TargetPower | Mapping[str, TargetPower],
                        title: Optional[str] = "Target power in the top eigenvectors") -> go.Figure:
    """The cumulative share of ||y||^2 in the top-k eigenvectors against k.

    Args:
        power: one curve, or several by name (e.g. at init and after training) to compare.
        title: the figure's title.
    """
    curves = {"target power": power} if isinstance(power, TargetPower) else dict(power)
    fig = go.Figure()
    for i, (name, curve) in enumerate(curves.items()):
        share = np.asarray(curve.cumulative, dtype=float)
        fig.add_trace(go.Scatter(x=np.arange(1, len(share) + 1), y=share, mode="lines+markers", name=name,
                                 line={"color": class_color(i)}, marker={"size": 4}))
    if not fig.data or all(len(t.y) == 0 for t in fig.data):
        return base_layout(no_data(fig), title)
    fig.update_xaxes(title_text="top k eigenvectors")
    fig.update_yaxes(title_text="share of ||y||²", range=[0, 1.02])
    return base_layout(fig, title)


def target_power_trajectory_figure(trajectory: TargetPowerTrajectory,
                                   title: Optional[str] = "Target power over training") -> go.Figure:
    """The share of ||y||^2 in the kernel's top-k eigenvectors at each checkpoint, one line per k:
    lines that rise mean the kernel is aligning with the task.

    Args:
        trajectory: the shares per checkpoint and k.
        title: the figure's title.
    """
    steps, share = np.asarray(trajectory.steps), np.asarray(trajectory.share, dtype=float)
    if len(steps) == 0 or share.size == 0:
        return base_layout(no_data(go.Figure()), title)
    fig = go.Figure()
    for j, k in enumerate(np.asarray(trajectory.top_k)):
        fig.add_trace(go.Scatter(x=steps, y=share[:, j], mode="lines+markers", name=f"top {k}",
                                 line={"color": class_color(j)}, marker={"size": 4}))
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text="share of ||y||²", range=[0, 1.02])
    return base_layout(fig, title)


def mode_curves_figure(curves: ModeCurves, max_modes: int = 6,
                       title: Optional[str] = "Learning by modes: predicted and measured") -> go.Figure:
    """The residual along each of the top modes over training: measured (solid) and
    predicted by the initial kernel (dashed), on a log axis; one colour per mode.

    Args:
        curves: the predicted and measured residuals.
        max_modes: show at most this many modes (the largest eigenvalues).
        title: the figure's title.
    """
    fig = go.Figure()
    steps = np.asarray(curves.steps)
    n_modes = min(max_modes, np.asarray(curves.predicted).shape[1] if len(steps) else 0)
    for i in range(n_modes):
        group, color = f"mode {i + 1}", class_color(i)
        label = f"mode {i + 1} (λ = {curves.values[i]:.3g})"
        if curves.actual is not None:
            fig.add_trace(go.Scatter(x=steps, y=np.asarray(curves.actual)[:, i], mode="lines", name=label,
                                     legendgroup=group, line={"color": color}))
        fig.add_trace(go.Scatter(
            x=steps, y=np.asarray(curves.predicted)[:, i], mode="lines", legendgroup=group,
            name=label if curves.actual is None else f"predicted {i + 1}",
            showlegend=curves.actual is None, line={"color": color, "dash": "dash"},
        ))
    if not fig.data:
        return base_layout(no_data(fig), title)
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(**axis_scale(True), title_text="|residual along mode|", exponentformat="power")
    return base_layout(fig, title)


# ---------------------------------------------------------------- lazy versus rich


def kernel_trajectory_figure(trajectory: KernelTrajectory,
                             title: Optional[str] = "How far the kernel moves") -> go.Figure:
    """Left: relative kernel change, kernel distance and relative weight change over
    training. Right: overlap of the top eigenvector span with the initial one, and the
    kernel-target alignment when known.

    Args:
        trajectory: the measures at each checkpoint.
        title: the figure's title.
    """
    steps = np.asarray(trajectory.steps)
    if len(steps) == 0:
        return base_layout(no_data(go.Figure()), title)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("change from step 0", "eigenvectors and task"),
                        horizontal_spacing=0.12)
    left = [("relative kernel change", trajectory.relative_change),
            ("kernel distance", trajectory.distance),
            ("relative weight change", trajectory.weight_change)]
    right = [("top-k subspace overlap", trajectory.subspace_overlap),
             ("kernel-target alignment", trajectory.alignment)]
    for col, series in ((1, left), (2, right)):
        for name, values in series:
            if values is not None:
                color = class_color(len(fig.data))
                fig.add_trace(go.Scatter(x=steps, y=np.asarray(values, dtype=float), mode="lines+markers",
                                         name=name, line={"color": color}, marker={"size": 4}),
                              row=1, col=col)
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(range=[0, 1.02], row=1, col=2)
    return base_layout(fig, title)
