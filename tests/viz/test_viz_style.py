"""The shared palette, colour scales and layout."""
import re
from pathlib import Path

import numpy as np
import plotly.graph_objects as go

import viz
from viz.style import (
    CLASS_COLORS,
    DIVERGING_SCALE,
    SEQUENTIAL_SCALE,
    UIREVISION,
    WEBGL_THRESHOLD,
    axis_scale,
    base_layout,
    class_color,
    class_rgb,
    hex_to_rgb,
    scatter_trace,
    value_color_axis,
)


def test_palette_has_ten_distinct_colours():
    assert len(set(CLASS_COLORS)) == 10


def test_class_colour_repeats_after_the_palette():
    assert class_color(12) == class_color(2)


def test_class_rgb_matches_the_hex_palette():
    assert tuple(class_rgb(3)[2]) == hex_to_rgb(CLASS_COLORS[2])


def test_base_layout_sets_title_height_template_and_uirevision():
    fig = base_layout(go.Figure(), "hello", height=123)
    assert (fig.layout.title.text, fig.layout.height, fig.layout.uirevision) == ("hello", 123, UIREVISION)


def test_value_axis_is_diverging_around_zero_for_both_signs():
    axis = value_color_axis(np.array([-1.0, 3.0]))
    assert (axis["colorscale"], axis["cmin"], axis["cmax"]) == (DIVERGING_SCALE, -3.0, 3.0)


def test_value_axis_is_sequential_for_one_sign():
    assert value_color_axis(np.array([1.0, 2.0]), np.array([5.0]))["colorscale"] == SEQUENTIAL_SCALE


def test_scatter_switches_to_webgl_above_the_threshold():
    assert isinstance(scatter_trace(WEBGL_THRESHOLD + 1), go.Scattergl)
    assert isinstance(scatter_trace(WEBGL_THRESHOLD), go.Scatter)


def test_a_log_axis_labels_minor_ticks_with_their_whole_value():
    assert axis_scale(True) == {"type": "log", "minorloglabels": "complete"}
    assert axis_scale(False) == {"type": "linear"}


def test_every_log_axis_in_viz_comes_from_the_shared_settings():
    by_hand = [path.name for path in Path(viz.__file__).parent.glob("*.py")
               if re.search(r"""type\s*=\s*["']log["']""", path.read_text())]
    assert by_hand == []
