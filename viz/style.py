"""One look for every figure: the class palette, the colour scales and the shared layout.

Every builder in viz/ takes its colours from here and finishes with `base_layout`, so class k
has the same colour in every figure and all figures share fonts, margins and template.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

__all__ = ["class_color", "class_rgb", "hex_to_rgb", "scatter_trace", "value_color_axis", "axis_scale",
           "equal_aspect", "no_data", "base_layout", "image_trace", "selected_customdata", "CLASS_COLORS",
           "SPLIT_COLORS", "DIVERGING_SCALE", "SEQUENTIAL_SCALE", "COUNT_SCALE", "OUTLINE_COLOR", "REFERENCE_COLOR",
           "UIREVISION", "WEBGL_THRESHOLD", "DEFAULT_HEIGHT"]

# Qualitative palette for classes (Tableau 10): class k is CLASS_COLORS[k % 10] everywhere.
CLASS_COLORS = [
    "#4E79A7",  # blue
    "#F28E2B",  # orange
    "#E15759",  # red
    "#76B7B2",  # teal
    "#59A14F",  # green
    "#EDC948",  # yellow
    "#B07AA1",  # purple
    "#FF9DA7",  # pink
    "#9C755F",  # brown
    "#BAB0AC",  # grey
]

# Train and test series reuse the palette's first two colours.
SPLIT_COLORS = {"train": CLASS_COLORS[0], "test": CLASS_COLORS[1]}

DIVERGING_SCALE = "RdBu_r"  # values of both signs, white at zero
SEQUENTIAL_SCALE = "Viridis"  # values of one sign (or counts: see COUNT_SCALE)
COUNT_SCALE = "Blues"  # counts, light for few and dark for many

OUTLINE_COLOR = "#222222"  # marker outlines and reference lines
REFERENCE_COLOR = "#555555"  # targets and y = x lines

# Every log axis: minor ticks (2, 3, ... 9 times a power of ten) carry their whole value
# ("0.03") rather than a lone digit ("3"), which reads as a linear axis running 9, 8, 7 ...
LOG_AXIS = {"type": "log", "minorloglabels": "complete"}

# A constant uirevision keeps zoom and legend clicks across updates of the same figure.
UIREVISION = "dynamics-lab"

# Above this many points scatters use WebGL (go.Scattergl) instead of SVG.
WEBGL_THRESHOLD = 2000

FONT_SIZE = 13
DEFAULT_HEIGHT = 360


def class_color(k: int) -> str:
    """The colour of class `k` (a hex string); the palette repeats after 10 classes."""
    return CLASS_COLORS[int(k) % len(CLASS_COLORS)]


def class_rgb(n_classes: int) -> np.ndarray:
    """The class colours as an (n_classes, 3) float array of 0..255 RGB values."""
    return np.array([hex_to_rgb(class_color(k)) for k in range(n_classes)], dtype=float)


def hex_to_rgb(color: str) -> tuple[int, int, int]:
    """'#RRGGBB' -> (r, g, b) with 0..255 integers."""
    color = color.lstrip("#")
    return tuple(int(color[i : i + 2], 16) for i in (0, 2, 4))


def scatter_trace(n_points: int, **kwargs) -> go.Scatter | go.Scattergl:
    """A scatter trace for `n_points` points: WebGL above WEBGL_THRESHOLD, SVG below.

    Args:
        n_points: how many points the trace will show.
        **kwargs: passed to the trace (x, y, mode, marker, name, ...).
    """
    trace_type = go.Scattergl if n_points > WEBGL_THRESHOLD else go.Scatter
    return trace_type(**kwargs)


def value_color_axis(*arrays: np.ndarray) -> dict:
    """A shared colour axis for real values, to give as `layout.coloraxis`.

    Diverging and centred on zero when the finite values have both signs, sequential
    otherwise; the range covers all the arrays so that traces on the axis compare.

    Args:
        *arrays: the values that will be coloured on this axis.
    """
    values = np.concatenate([np.asarray(a, dtype=float).ravel() for a in arrays])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"colorscale": SEQUENTIAL_SCALE}
    low, high = float(values.min()), float(values.max())
    if low < 0 < high:
        bound = max(-low, high)
        return {"colorscale": DIVERGING_SCALE, "cmin": -bound, "cmax": bound, "cmid": 0.0}
    return {"colorscale": SEQUENTIAL_SCALE, "cmin": low, "cmax": high}


def axis_scale(log: bool) -> dict:
    """The settings of a log axis (`LOG_AXIS`) or of a linear one, for `update_xaxes`/`update_yaxes`."""
    return dict(LOG_AXIS) if log else {"type": "linear"}


def equal_aspect(fig: go.Figure, *, x_title: str = "x1", y_title: str = "x2") -> go.Figure:
    """Give a figure with one pair of axes equal scales (one unit is as long on both)."""
    fig.update_xaxes(title_text=x_title, constrain="domain")
    fig.update_yaxes(title_text=y_title, scaleanchor="x", scaleratio=1, constrain="domain")
    return fig


def no_data(fig: go.Figure, message: str = "no data yet") -> go.Figure:
    """Write `message` in the middle of an empty figure and hide its axes."""
    fig.add_annotation(
        text=message, x=0.5, y=0.5, xref="paper", yref="paper",
        showarrow=False, font={"size": FONT_SIZE + 3, "color": REFERENCE_COLOR},
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def base_layout(fig: go.Figure, title: str | None = None, height: int = DEFAULT_HEIGHT) -> go.Figure:
    """The layout every figure shares: white template, readable fonts, compact margins.

    Also sets a constant `uirevision`, so zoom and legend state survive data updates
    where the front end allows it.

    Args:
        fig: the figure to style (changed in place).
        title: the figure's title, or None for none.
        height: the figure's height in pixels.

    Returns:
        The same figure, for chaining.
    """
    fig.update_layout(
        template="plotly_white",
        title={"text": title, "x": 0.0, "xanchor": "left"} if title else None,
        height=height,
        margin={"l": 55, "r": 20, "t": 55 if title else 30, "b": 45},
        font={"size": FONT_SIZE},
        hoverlabel={"font_size": FONT_SIZE - 1},
        uirevision=UIREVISION,
    )
    return fig


def image_trace(image: np.ndarray, zrange: tuple[float, float]) -> go.BaseTraceType:
    """A (C, H, W) image: a grey heatmap for one channel (ink dark), an RGB image for three."""
    if image.shape[0] == 3:
        low, high = zrange
        rgb = np.clip((image - low) / ((high - low) or 1.0), 0, 1) * 255
        return go.Image(z=rgb.transpose(1, 2, 0).astype(np.uint8), hoverinfo="skip")
    return go.Heatmap(z=image.mean(axis=0), zmin=zrange[0], zmax=zrange[1], colorscale="Greys",
                      showscale=False, hovertemplate="%{z:.2f}<extra></extra>")


def selected_customdata(selection) -> list:
    """The `customdata` of each point a user picked on a chart, in the order picked.

    Args:
        selection: Streamlit's selection state of a plotly chart (the event, or its
            `selection`); None or an empty selection gives [].
    """
    if not selection:
        return []
    selection = selection.get("selection", selection)
    return [point["customdata"] for point in selection.get("points", []) or [] if point.get("customdata") is not None]
