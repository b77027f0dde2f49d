"""Lazy/rich figures, from synthetic numpy results."""
import numpy as np
from viz_samples import assert_valid

from engine.results import LazyMeasures
from viz import lazy as fig_lazy


def make_measures(scale=1.0, twin=True, n=5):
    steps = np.arange(n) * 10
    rising = scale * np.linspace(0, 1, n)
    return LazyMeasures(steps, rising, np.column_stack([rising, 2 * rising]), ["layers.fc1", "layers.out"],
                        rising, rising / 2, 0.2 + rising / 4, 1 - rising / 2, 5 - rising,
                        rising / 10 if twin else None, np.exp(-steps / 10) if twin else None,
                        np.exp(-steps / 20) if twin else None, rising / 3)


def test_measures_share_axes_one_colour_per_run():
    fig = assert_valid(fig_lazy.measures_figure({"lazy": make_measures(0.01), "rich": make_measures(1.0)}))
    lazy_colours = {t.line.color for t in fig.data if t.name == "lazy"}
    rich_colours = {t.line.color for t in fig.data if t.name == "rich"}
    assert len(lazy_colours) == len(rich_colours) == 1 and lazy_colours != rich_colours
    assert len([t for t in fig.data if t.name == "lazy"]) == len(fig_lazy.MEASURES)


def test_the_twin_panel_is_left_out_when_no_run_has_a_twin():
    fig = fig_lazy.measures_figure({"a": make_measures(twin=False)})
    assert "Gap to the linearized twin" not in [a.text for a in fig.layout.annotations]


def test_twin_figure_draws_network_and_twin_per_run():
    fig = assert_valid(fig_lazy.twin_figure({"a": make_measures(), "b": make_measures()}))
    assert [t.name for t in fig.data] == ["a: network", "a: linearized", "b: network", "b: linearized"]


def test_layer_change_shows_the_last_checkpoint():
    fig = assert_valid(fig_lazy.layer_change_figure({"a": make_measures()}))
    assert list(fig.data[0].y) == [1.0, 2.0]


def test_phase_heatmap_averages_seeds_and_puts_width_on_rows():
    values = np.arange(2 * 3 * 2, dtype=float).reshape(2, 3, 2)  # (alphas, widths, seeds)
    fig = assert_valid(fig_lazy.phase_heatmap(values, [0.1, 10], [8, 16, 32], label="change"))
    z = np.asarray(fig.data[0].z)
    assert z.shape == (3, 2) and z[1, 0] == values[0, 1].mean()


def test_a_click_on_a_heatmap_cell_names_its_alpha_and_width():
    fig = fig_lazy.phase_heatmap(np.ones((2, 3, 1)), [0.1, 10], [8, 16, 32], label="change")
    cells = fig.data[1].customdata
    point = {"x": fig.data[1].x[3], "y": fig.data[1].y[3], "customdata": list(cells[3])}
    assert fig_lazy.selected_cell({"selection": {"points": [point]}}) == (1, 1)
    assert fig_lazy.selected_cell({"selection": {"points": []}}) is None


def test_log_panels_label_minor_ticks_in_full():
    fig = fig_lazy.measures_figure({"a": make_measures()})
    log_axes = [axis for name, axis in fig.layout.to_plotly_json().items()
                if name.startswith("yaxis") and axis.get("type") == "log"]
    assert log_axes and all(axis["minorloglabels"] == "complete" for axis in log_axes)


def test_deciding_figure_puts_each_runs_last_value_side_by_side():
    runs = {"alpha 0.1": make_measures(1.0), "alpha 1": make_measures(0.1), "alpha 10": make_measures(0.01)}
    fig = assert_valid(fig_lazy.deciding_figure(runs))
    weight_change = fig.data[0]
    assert list(weight_change.x) == list(runs) and np.allclose(weight_change.y, [1.0, 0.1, 0.01])
    assert list(weight_change.text) == ["1", "0.1", "0.01"]
    assert [a.text for a in fig.layout.annotations] == [
        "Relative weight change", "Kernel distance from init", "Gap to the linearized twin"]


def test_deciding_figure_colours_runs_as_the_measures_figure_does():
    runs = {"lazy": make_measures(0.01), "rich": make_measures(1.0)}
    bars = fig_lazy.deciding_figure(runs).data[0].marker.color
    lines = [t.line.color for t in fig_lazy.measures_figure(runs).data if t.showlegend]
    assert list(bars) == lines


def test_deciding_figure_reads_the_newest_finite_checkpoint():
    measures = make_measures(1.0)
    measures.weight_change[-1] = np.nan  # the newest checkpoint not measured yet
    assert fig_lazy.deciding_figure({"a": measures}).data[0].y[0] == measures.weight_change[-2]


def test_deciding_figure_without_measures_says_so():
    fig = assert_valid(fig_lazy.deciding_figure({}))
    assert fig.layout.annotations[0].text == "no measures yet"
