"""Pruning figures: accuracy against sparsity, where the pruned weights are, how the pruned
models differ from the dense one (decision regions, fragile and robust samples), and lottery
tickets against their control.

Builders take the plain results of engine.results (`PruningSweep`, `LotteryTickets`,
`LastLayerGeometry`, `PrunedRegions`, `FlipGallery`) or plain dicts of numpy masks, and
return plotly figures. Each method
has one colour in every figure (`method_color`).
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from engine.results import (
    ChannelRemoval,
    FlipGallery,
    LastLayerGeometry,
    LotteryTickets,
    PrunedRegions,
    PruningSweep,
    SimilarityMatrix,
)
from viz.geometry import sample_kind, similarity_heatmap
from viz.predictions import decision_regions
from viz.style import (
    CLASS_COLORS,
    COUNT_SCALE,
    DEFAULT_HEIGHT,
    OUTLINE_COLOR,
    REFERENCE_COLOR,
    SEQUENTIAL_SCALE,
    axis_scale,
    base_layout,
    class_color,
    equal_aspect,
    no_data,
    scatter_trace,
    value_color_axis,
)
from viz.training import format_accuracy_axis, has_finite

__all__ = ["method_color", "accuracy_curves", "measure_curves", "layer_sparsity_bars", "channel_bars", "cka_bars",
           "overlap_heatmap", "mask_images", "geometry_scatter", "lottery_curves", "regions_side_by_side",
           "flip_gallery", "METHOD_COLORS", "MEASURES"]

# A fixed colour per known method, so a method looks the same whatever else is compared.
METHOD_COLORS = {
    "magnitude": CLASS_COLORS[0], "taylor": CLASS_COLORS[1], "grasp": CLASS_COLORS[2],
    "synflow": CLASS_COLORS[3], "synflow_iterative": CLASS_COLORS[4], "snip": CLASS_COLORS[5],
    "obd": CLASS_COLORS[6], "l2_neuron": CLASS_COLORS[7], "l1_neuron": CLASS_COLORS[8],
    "random": CLASS_COLORS[9], "oba": OUTLINE_COLOR,
}
OUTCOME_COLORS = {True: CLASS_COLORS[4], False: CLASS_COLORS[2]}  # correct green, wrong red
MASK_IMAGE_LIMIT = 20_000  # layers with more weights than this are not drawn as images
MASK_IMAGE_COLUMNS = 3
REGION_COLUMNS = 4


def method_color(name: str, index: int = 0) -> str:
    """The method's fixed colour; an unknown method takes the palette colour of its index."""
    return METHOD_COLORS.get(name, class_color(index))


def _metric(sweep: PruningSweep) -> tuple[str, np.ndarray, float]:
    """Accuracy when there is one (classification), else the loss, with the dense value."""
    if has_finite(np.asarray(sweep.accuracy, dtype=float)):
        return "test accuracy", np.asarray(sweep.accuracy, dtype=float), sweep.dense_accuracy
    return "test loss", np.asarray(sweep.loss, dtype=float), sweep.dense_loss


def _dense_line(fig: go.Figure, value: float, label: str = "dense", **where) -> None:
    """A dotted line at the dense model's value; `where` is `row=..., col=...` in a subplot."""
    if value is not None and math.isfinite(value):
        fig.add_hline(y=value, line={"color": REFERENCE_COLOR, "dash": "dot", "width": 1},
                      annotation_text=label, annotation_position="bottom left", **where)


def accuracy_curves(sweep: PruningSweep, *, corrupted: bool = True,
                    title: str | None = None) -> go.Figure:
    """Test accuracy against sparsity, one colour per method; on corrupted data in a panel of
    its own beside the clean one (same colours, same y axis), where the curves of all methods
    would otherwise lie on top of each other.

    The corrupted curve is the mean accuracy over the sweep's corruptions. A dotted line marks
    the dense model. For regression the test loss is shown instead (no corruptions).

    Args:
        sweep: the methods x sparsities results.
        corrupted: draw the corrupted curves too.
        title: the figure's title.
    """
    name, values, dense = _metric(sweep)
    if not len(sweep.methods) or not len(sweep.sparsities):
        return base_layout(no_data(go.Figure()), title)
    show_corrupted = corrupted and name == "test accuracy" and has_finite(
        np.asarray(sweep.corrupted_accuracy, dtype=float))
    panels = [(values, dense, "clean")]
    if show_corrupted:
        panels.append((np.asarray(sweep.corrupted_accuracy, dtype=float), sweep.dense_corrupted_accuracy, "corrupted"))
    fig = make_subplots(rows=1, cols=len(panels), shared_yaxes=True, horizontal_spacing=0.05,
                        subplot_titles=[f"{data} test data" for _, _, data in panels] if show_corrupted else None)
    x = np.asarray(sweep.sparsities, dtype=float)
    for col, (panel_values, panel_dense, data) in enumerate(panels, start=1):
        for i, method in enumerate(sweep.methods):
            color = method_color(method, i)
            fig.add_trace(go.Scatter(
                x=x, y=panel_values[i], name=method, legendgroup=method, showlegend=col == 1,
                mode="lines+markers", line={"color": color, "width": 2}, marker={"color": color, "size": 6},
                hovertemplate=f"{method}, {data}<br>sparsity %{{x:.1%}}<br>{name} %{{y:.3f}}<extra></extra>"),
                row=1, col=col)
        _dense_line(fig, panel_dense, row=1, col=col)
    fig.update_xaxes(title_text="sparsity (weights pruned)" if len(panels) == 1 else "sparsity", tickformat=".0%")
    fig.update_yaxes(title_text=name, row=1, col=1)
    if name == "test accuracy":
        format_accuracy_axis(fig, np.concatenate([v.ravel() for v, _, _ in panels]))
    base_layout(fig, title, height=DEFAULT_HEIGHT + 40)
    fig.update_layout(legend={"orientation": "h", "y": -0.25, "x": 0})  # under the panels: they keep the width
    return fig


# What `measure_curves` draws: name -> (the sweep's (M, S) field, its dense value's field).
MEASURES = {
    "sharpness (top Hessian eigenvalue)": ("sharpness", "dense_sharpness"),
    "train accuracy": ("train_accuracy", "dense_train_accuracy"),
    "train loss": ("train_loss", "dense_train_loss"),
    "test loss": ("loss", "dense_loss"),
    "test predictions flipped": ("flipped", None),
}


def measure_curves(sweep: PruningSweep, measure: str, *, title: str | None = None) -> go.Figure:
    """Any other measure of the sweep against sparsity, one colour per method, with the
    dense model's value dotted (see MEASURES).

    Args:
        sweep: the methods x sparsities results.
        measure: a key of MEASURES.
        title: the figure's title.
    """
    if measure not in MEASURES:
        raise ValueError(f"Unknown measure {measure!r}; choose one of {', '.join(MEASURES)}.")
    field, dense_field = MEASURES[measure]
    values = getattr(sweep, field)
    values = None if values is None else np.asarray(values, dtype=float)
    fig = go.Figure()
    if values is None or not values.size or not has_finite(values):
        return base_layout(no_data(fig, f"no {measure} in this sweep"), title)
    x = np.asarray(sweep.sparsities, dtype=float)
    for i, method in enumerate(sweep.methods):
        color = method_color(method, i)
        fig.add_trace(go.Scatter(
            x=x, y=values[i], name=method, mode="lines+markers",
            line={"color": color, "width": 2}, marker={"color": color, "size": 6},
            hovertemplate=(f"{method}<br>sparsity %{{x:.1%}}<br>{measure} %{{y:.3g}}"
                           "<extra></extra>")))
    if dense_field is not None:
        _dense_line(fig, getattr(sweep, dense_field))
    fig.update_xaxes(title_text="sparsity (weights pruned)", tickformat=".0%")
    fig.update_yaxes(title_text=measure)
    if "accuracy" in measure:
        format_accuracy_axis(fig, values)
    elif measure == "test predictions flipped":
        fig.update_yaxes(tickformat=".0%", rangemode="tozero")
    return base_layout(fig, title)


def _grouped_bars(groups: list[str], values: np.ndarray, methods: list[str],
                  hover_name: str) -> go.Figure:
    """One bar per method in each group; values is (M, G)."""
    fig = go.Figure()
    for i, method in enumerate(methods):
        fig.add_trace(go.Bar(
            x=groups, y=values[i], name=method, marker={"color": method_color(method, i)},
            hovertemplate=f"{method}<br>%{{x}}<br>{hover_name} %{{y:.3f}}<extra></extra>"))
    fig.update_layout(barmode="group")
    fig.update_xaxes(type="category")
    return fig


def layer_sparsity_bars(sweep: PruningSweep, sparsity_index: int = -1, *,
                        title: str | None = None) -> go.Figure:
    """How each method spreads its pruning over the layers, at one overall sparsity.

    Args:
        sweep: the results.
        sparsity_index: which of `sweep.sparsities` to show.
        title: the figure's title; by default it names the sparsity.
    """
    if not len(sweep.methods) or not len(sweep.sparsities) or not len(sweep.layers):
        return base_layout(no_data(go.Figure()), title)
    target = float(sweep.sparsities[sparsity_index])
    fig = _grouped_bars(list(sweep.layers), np.asarray(sweep.layer_sparsity)[:, sparsity_index],
                        list(sweep.methods), "sparsity")
    fig.update_yaxes(title_text="fraction pruned", range=[0, 1.02], tickformat=".0%")
    return base_layout(fig, title or f"per-layer sparsity at {target:.0%} overall")


def channel_bars(removal: ChannelRemoval, *, title: str | None = None) -> go.Figure:
    """Each conv layer's channels before and after channel removal, the parameters and the
    test accuracy of the masked and the smaller model in the title."""
    if not len(removal.layers):
        return base_layout(no_data(go.Figure()), title)
    channels = np.asarray(removal.channels, dtype=float)
    fig = go.Figure([go.Bar(x=list(removal.layers), y=channels[:, k], name=name,
                            marker_color=color)
                     for k, (name, color) in enumerate((("before", REFERENCE_COLOR), ("after", OUTLINE_COLOR)))])
    fig.update_layout(barmode="group")
    fig.update_yaxes(title_text="channels")
    before, after = (int(n) for n in removal.parameters)
    accuracy = np.asarray(removal.accuracy, dtype=float)
    shown = (f"; test accuracy masked {accuracy[1]:.1%}, smaller {accuracy[2]:.1%}"
             if np.isfinite(accuracy[1:]).all() else "")
    return base_layout(fig, title or f"channels removed: {before:,} to {after:,} parameters{shown}")


def cka_bars(sweep: PruningSweep, sparsity_index: int = -1, *,
             title: str | None = None) -> go.Figure:
    """Linear CKA of each layer to the dense model's, one bar per method (1: the same
    representation up to rotation and scale)."""
    if not len(sweep.methods) or not len(sweep.sparsities) or not len(sweep.cka_layers):
        return base_layout(no_data(go.Figure()), title)
    target = float(sweep.sparsities[sparsity_index])
    fig = _grouped_bars(list(sweep.cka_layers), np.asarray(sweep.cka)[:, sparsity_index],
                        list(sweep.methods), "CKA to dense")
    fig.update_yaxes(title_text="linear CKA to the dense model", range=[0, 1.02])
    return base_layout(fig, title or f"similarity to the dense model at {target:.0%} sparsity")


def overlap_heatmap(sweep: PruningSweep, sparsity_index: int = -1, *,
                    title: str | None = None) -> go.Figure:
    """Which methods keep the same weights: the Jaccard index of their masks (1: identical)."""
    if not len(sweep.methods) or not len(sweep.sparsities):
        return base_layout(no_data(go.Figure()), title)
    target = float(sweep.sparsities[sparsity_index])
    view = SimilarityMatrix(np.asarray(sweep.overlap)[sparsity_index], list(sweep.methods),
                            list(sweep.methods), measure="kept-weight overlap (Jaccard)")
    return similarity_heatmap(view, title=title or f"mask overlap at {target:.0%} sparsity")


def _as_image(mask: np.ndarray) -> np.ndarray:
    """A weight's mask as a 2-D image: rows are output units, columns everything else."""
    mask = np.asarray(mask, dtype=float)
    return mask.reshape(len(mask), -1) if mask.ndim > 1 else mask[None, :]


def mask_images(masks: Mapping[str, np.ndarray], *, limit: int = MASK_IMAGE_LIMIT,
                title: str | None = None) -> go.Figure:
    """Each small layer's mask as an image: dark where a weight is kept, white where pruned.

    Rows are output units (a structured method empties whole rows); convolution weights show
    each channel's inputs and kernel along the row.

    Args:
        masks: layer name -> 0/1 or bool array of the weight's shape.
        limit: layers with more entries than this are left out.
        title: the figure's title.
    """
    small = {name: _as_image(m) for name, m in masks.items() if np.asarray(m).size <= limit}
    if not small:
        return base_layout(no_data(go.Figure(), "no layer is small enough to draw"), title)
    columns = min(MASK_IMAGE_COLUMNS, len(small))
    rows = math.ceil(len(small) / columns)
    titles = [f"{name}: {image.mean():.0%} kept" for name, image in small.items()]
    fig = make_subplots(rows=rows, cols=columns, subplot_titles=titles,
                        horizontal_spacing=0.06, vertical_spacing=0.12)
    for k, (name, image) in enumerate(small.items()):
        fig.add_trace(go.Heatmap(
            z=image, coloraxis="coloraxis", name=name,
            hovertemplate=f"{name}<br>unit %{{y}}, input %{{x}}<br>kept %{{z:.0f}}<extra></extra>"),
            row=k // columns + 1, col=k % columns + 1)
    fig.update_layout(coloraxis={"colorscale": COUNT_SCALE, "cmin": 0, "cmax": 1,
                                 "showscale": False})
    fig.update_yaxes(autorange="reversed", showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    return base_layout(fig, title, height=max(300, 260 * rows))


def geometry_scatter(geometry: LastLayerGeometry, *, title: str | None = None) -> go.Figure:
    """Each sample's feature norm against its angle to the true class weight (Li et al. 2022),
    green when classified correctly and red when not; hover for the angular margin.

    Correct samples sit at small angles; a larger feature norm at the same angle means a more
    confident logit.
    """
    fig = go.Figure()
    angle = np.asarray(geometry.angle, dtype=float)
    if angle.size == 0:
        return base_layout(no_data(fig), title)
    correct = np.asarray(geometry.correct, dtype=bool)
    for outcome, name in ((True, "correct"), (False, "incorrect")):
        chosen = correct == outcome
        if not chosen.any():
            continue
        fig.add_trace(scatter_trace(
            int(chosen.sum()), x=angle[chosen], y=np.asarray(geometry.feature_norm)[chosen],
            mode="markers", name=name,
            marker={"color": OUTCOME_COLORS[outcome], "size": 6, "opacity": 0.7,
                    "line": {"color": OUTLINE_COLOR, "width": 0.3}},
            customdata=np.stack([np.asarray(geometry.margin)[chosen],
                                 np.asarray(geometry.labels)[chosen]], axis=1),
            hovertemplate=("class %{customdata[1]:.0f}<br>angle %{x:.1f}°<br>norm %{y:.2f}"
                           "<br>margin %{customdata[0]:.1f}°<extra></extra>")))
    fig.update_xaxes(title_text="angle to the true class weight (degrees)")
    fig.update_yaxes(title_text="feature norm ||f||")
    return base_layout(fig, title)


def lottery_curves(tickets: LotteryTickets, *, title: str | None = None) -> go.Figure:
    """Test accuracy against the fraction of weights kept: winning tickets (rewound to their
    init) against the same masks randomly re-initialised. Density falls to the right."""
    density = np.asarray(tickets.density, dtype=float)
    fig = go.Figure()
    if density.size == 0:
        return base_layout(no_data(fig), title)
    ticket = np.asarray(tickets.ticket_accuracy, dtype=float)
    use_loss = not has_finite(ticket)
    name = "test loss" if use_loss else "test accuracy"
    series = {"ticket": tickets.ticket_loss if use_loss else ticket,
              "random re-init": tickets.control_loss if use_loss else tickets.control_accuracy}
    for k, (label, values) in enumerate(series.items()):
        values = np.asarray(values, dtype=float)
        if not has_finite(values[1:]) and k:
            continue  # no control ran
        fig.add_trace(go.Scatter(
            x=density, y=values, name=label, mode="lines+markers",
            line={"color": class_color(k), "width": 2, "dash": "dash" if k else "solid"},
            marker={"color": class_color(k), "size": 6},
            hovertemplate=f"{label}<br>%{{x:.1%}} kept<br>{name} %{{y:.3f}}<extra></extra>"))
    _dense_line(fig, float(series["ticket"][0]))
    fig.update_xaxes(title_text="weights kept (log scale)", **axis_scale(True), autorange="reversed",
                     tickformat=".1%")
    fig.update_yaxes(title_text=name)
    if not use_loss:
        format_accuracy_axis(fig, ticket)
    return base_layout(fig, title)


# ---------------------------------------------------------------- decision regions side by side


def regions_side_by_side(regions: PrunedRegions, *, columns: int = REGION_COLUMNS,
                         title: str | None = None) -> go.Figure:
    """The dense model's decision regions beside each pruned model's, on shared axes.

    Each panel is `viz.predictions.decision_regions` of one model (classes tinted by
    confidence, the training points on top); regression surfaces share one colour scale.

    Args:
        regions: the panels (dense first).
        columns: panels per row.
        title: the figure's title.
    """
    if not len(regions.names):
        return base_layout(no_data(go.Figure()), title)
    k = len(regions.names)
    columns = min(columns, k)
    rows = math.ceil(k / columns)
    accuracy = np.asarray(regions.accuracy, dtype=float)
    titles = [name + (f" · {accuracy[i]:.1%}" if math.isfinite(accuracy[i]) else "")
              for i, name in enumerate(regions.names)]
    fig = make_subplots(rows=rows, cols=columns, subplot_titles=titles,
                        horizontal_spacing=0.04, vertical_spacing=0.1)
    for i in range(k):
        row, col = i // columns + 1, i % columns + 1
        panel = decision_regions(regions.panel(i))
        for trace in panel.data:
            if isinstance(trace, (go.Scatter, go.Scattergl)):  # the points: one legend entry
                trace.update(showlegend=i == 0, legendgroup=trace.name)
            fig.add_trace(trace, row=row, col=col)
        # No equal aspect (images ask for one unless told): it would shrink each panel away
        # from its title.
        fig.update_xaxes(range=panel.layout.xaxis.range, showticklabels=False, row=row, col=col)
        fig.update_yaxes(range=panel.layout.yaxis.range, showticklabels=False, scaleanchor=False,
                         row=row, col=col)
    if regions.task != "classification":
        fig.update_layout(coloraxis=value_color_axis(regions.values, regions.labels))
    return base_layout(fig, title, height=60 + 300 * rows)


# ---------------------------------------------------------------- fragile and robust samples


def _pruned_class(gallery: FlipGallery, i: int) -> int:
    """Sample i's predicted class at the sparsity where it first flips."""
    s = int(np.flatnonzero(np.asarray(gallery.sparsities) == gallery.flip_sparsity[i])[0])
    return int(np.asarray(gallery.predictions)[s, i])


def _gallery_title(gallery: FlipGallery, i: int, fragile: bool) -> str:
    dense = int(gallery.dense_prediction[i])
    if fragile:
        return f"#{i}: {dense}→{_pruned_class(gallery, i)} at {gallery.flip_sparsity[i]:.0%}"
    return f"#{i}: {dense} kept"


def flip_gallery(gallery: FlipGallery, *, title: str | None = None) -> go.Figure:
    """Fragile samples (their prediction flips at the lowest sparsity) above robust ones (it
    never flips): images as greyscale pictures, signals as curves. For 2-D inputs, every test
    point on the plane instead, coloured by the sparsity at which it flips, grey if never.

    Args:
        gallery: the samples and their predictions.
        title: the figure's title.
    """
    inputs = np.asarray(gallery.inputs, dtype=float).reshape(len(gallery.labels), -1)
    kind = sample_kind(gallery.input_shape, inputs.shape[1]) if len(inputs) else "point"
    if kind == "point" and inputs.shape[1] >= 2:
        return _flips_on_the_plane(gallery, inputs, title)
    fragile, robust = list(gallery.fragile), list(gallery.robust)
    columns = max(len(fragile), len(robust))
    if not columns:
        return base_layout(no_data(go.Figure(), "no samples to show"), title)
    shown = [(i, True) for i in fragile] + [None] * (columns - len(fragile)) + \
        [(i, False) for i in robust] + [None] * (columns - len(robust))
    fig = make_subplots(rows=2, cols=columns, horizontal_spacing=0.02, vertical_spacing=0.16,
                        subplot_titles=[_gallery_title(gallery, *s) if s else "" for s in shown])
    low, high = float(inputs.min()), float(inputs.max())
    for k, entry in enumerate(shown):
        if entry is None:
            continue
        i, fragile_one = entry
        row, col = k // columns + 1, k % columns + 1
        if kind == "image":
            shape = [int(s) for s in gallery.input_shape]
            image = inputs[i].reshape(-1, shape[-2], shape[-1]).mean(axis=0)
            fig.add_trace(go.Heatmap(z=image, zmin=low, zmax=high, colorscale="Greys",
                                     showscale=False, hoverinfo="skip"), row=row, col=col)
            fig.update_yaxes(autorange="reversed", scaleanchor=f"x{k + 1}" if k else "x",
                             constrain="domain", row=row, col=col)
            fig.update_xaxes(constrain="domain", row=row, col=col)
        else:
            color = OUTCOME_COLORS[not fragile_one]
            fig.add_trace(go.Scatter(y=inputs[i], mode="lines", line={"color": color, "width": 2},
                                     hoverinfo="skip"), row=row, col=col)
            fig.update_yaxes(range=[low, high], row=row, col=col)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    fig.update_yaxes(title_text="fragile", row=1, col=1)
    fig.update_yaxes(title_text="robust", row=2, col=1)
    fig.update_annotations(font_size=11)
    fig.update_layout(showlegend=False)
    return base_layout(fig, title, height=380)


def _flips_on_the_plane(gallery: FlipGallery, inputs: np.ndarray, title: str | None
                        ) -> go.Figure:
    """The test points on the plane of their first two inputs: grey if pruning never flips
    their prediction, else coloured by the lowest sparsity at which it does."""
    at = np.asarray(gallery.flip_sparsity, dtype=float)
    never = ~np.isfinite(at)
    fig = go.Figure()
    fig.add_trace(scatter_trace(
        int(never.sum()), x=inputs[never, 0], y=inputs[never, 1], mode="markers",
        name=f"never flips (up to {float(np.max(gallery.sparsities)):.0%})",
        marker={"color": REFERENCE_COLOR, "size": 6, "opacity": 0.35},
        hovertemplate="(%{x:.3g}, %{y:.3g})<br>keeps its prediction<extra></extra>"))
    fig.add_trace(scatter_trace(
        int((~never).sum()), x=inputs[~never, 0], y=inputs[~never, 1], mode="markers",
        name="flips", customdata=at[~never],
        marker={"color": at[~never], "coloraxis": "coloraxis", "size": 9,
                "line": {"color": OUTLINE_COLOR, "width": 1}},
        hovertemplate="(%{x:.3g}, %{y:.3g})<br>flips at %{customdata:.0%}<extra></extra>"))
    sparsities = np.asarray(gallery.sparsities, dtype=float)
    fig.update_layout(coloraxis={"colorscale": SEQUENTIAL_SCALE, "cmin": float(sparsities.min()),
                                 "cmax": float(sparsities.max()),
                                 "colorbar": {"title": {"text": "flips at"}, "tickformat": ".0%"}},
                      legend={"orientation": "h", "y": -0.15})
    equal_aspect(fig)
    return base_layout(fig, title, height=420)
