"""Pruning figures, built from small synthetic results."""
import subprocess
import sys
from pathlib import Path

import numpy as np
from viz_samples import assert_valid

from engine.results import FlipGallery, LastLayerGeometry, LotteryTickets, PrunedRegions, PruningSweep
from viz.pruning import (
    METHOD_COLORS,
    accuracy_curves,
    channel_bars,
    cka_bars,
    flip_gallery,
    geometry_scatter,
    layer_sparsity_bars,
    lottery_curves,
    mask_images,
    measure_curves,
    method_color,
    overlap_heatmap,
    regions_side_by_side,
)

ROOT = Path(__file__).resolve().parents[2]
rng = np.random.default_rng(0)


def make_sweep(methods=("magnitude", "random", "custom"), sparsities=(0.5, 0.8, 0.9)):
    m, s = len(methods), len(sparsities)
    falling = 0.95 - 0.5 * np.asarray(sparsities) ** 4
    return PruningSweep(
        methods=list(methods), sparsities=np.asarray(sparsities), accuracy=np.tile(falling, (m, 1)),
        loss=np.ones((m, s)), corrupted_accuracy=np.tile(falling - 0.2, (m, 1)),
        corruptions={"noise 0.5": np.tile(falling - 0.2, (m, 1))},
        layers=["fc1.weight", "out.weight"], layer_sparsity=rng.uniform(size=(m, s, 2)),
        overlap=np.tile(np.eye(m), (s, 1, 1)), cka_layers=["fc1", "out"],
        cka=rng.uniform(size=(m, s, 2)), flipped=np.zeros((m, s)),
        scoring_seconds=np.zeros((m, s)), finetune_seconds=np.zeros((m, s)),
        dense_accuracy=0.96, dense_loss=0.1, dense_corrupted_accuracy=0.8)


def test_accuracy_curves_put_clean_and_corrupted_in_two_panels_in_one_colour_per_method():
    fig = assert_valid(accuracy_curves(make_sweep()))
    clean = [t for t in fig.data if t.xaxis == "x"]
    corrupted = [t for t in fig.data if t.xaxis == "x2"]
    assert [t.line.color for t in clean] == [t.line.color for t in corrupted] == [
        METHOD_COLORS["magnitude"], METHOD_COLORS["random"], method_color("custom", 2)]
    assert [a.text for a in fig.layout.annotations][:2] == ["clean test data", "corrupted test data"]


def test_accuracy_curves_panels_share_the_accuracy_axis():
    fig = accuracy_curves(make_sweep())
    sweep = make_sweep()
    assert fig.layout.yaxis2.matches == "y" and np.allclose(fig.data[3].y, sweep.corrupted_accuracy[0])


def test_accuracy_curves_name_each_method_once_in_the_legend():
    fig = accuracy_curves(make_sweep())
    assert [t.name for t in fig.data if t.showlegend] == ["magnitude", "random", "custom"]


def test_accuracy_curves_without_corruptions_have_one_panel():
    fig = assert_valid(accuracy_curves(make_sweep(), corrupted=False))
    assert {t.xaxis for t in fig.data} == {"x"} and len(fig.data) == 3


def test_accuracy_curves_show_the_loss_for_regression():
    sweep = make_sweep()
    sweep.accuracy[:] = np.nan
    fig = assert_valid(accuracy_curves(sweep))
    assert fig.layout.yaxis.title.text == "test loss" and len(fig.data) == 3


def test_layer_sparsity_bars_group_one_bar_per_method():
    sweep = make_sweep()
    fig = assert_valid(layer_sparsity_bars(sweep, 1))
    assert [list(t.y) for t in fig.data] == sweep.layer_sparsity[:, 1].tolist()


def test_cka_bars_show_each_layer_for_each_method():
    fig = assert_valid(cka_bars(make_sweep()))
    assert all(list(t.x) == ["fc1", "out"] for t in fig.data) and len(fig.data) == 3


def test_overlap_heatmap_names_every_method_in_full_on_both_axes():
    methods = ("magnitude", "random", "taylor", "synflow", "synflow_iterative")
    fig = assert_valid(overlap_heatmap(make_sweep(methods=methods), 0))
    assert list(fig.data[0].x) == list(fig.data[0].y) == list(methods)
    assert fig.layout.xaxis.dtick == fig.layout.yaxis.dtick == 1  # no name skipped when crowded
    assert fig.layout.xaxis.automargin and fig.layout.yaxis.automargin  # none cut at the margin


def test_overlap_heatmap_shows_the_jaccard_matrix():
    sweep = make_sweep()
    fig = assert_valid(overlap_heatmap(sweep, 0))
    assert np.array_equal(np.asarray(fig.data[0].z), sweep.overlap[0])


def test_mask_images_draw_small_layers_only():
    masks = {"small": rng.uniform(size=(4, 6)) > 0.5, "conv": rng.uniform(size=(3, 2, 3, 3)) > 0.5,
             "big": np.ones((300, 300), dtype=bool)}
    fig = assert_valid(mask_images(masks))
    assert [t.name for t in fig.data] == ["small", "conv"]
    assert np.asarray(fig.data[1].z).shape == (3, 18)  # channels x (inputs * kernel)


def test_geometry_scatter_colours_correct_and_incorrect_samples():
    n = 40
    geometry = LastLayerGeometry(rng.uniform(1, 5, n), rng.uniform(0, 90, n), rng.normal(size=n),
                                 np.arange(n) % 3 > 0, np.arange(n) % 10)
    fig = assert_valid(geometry_scatter(geometry))
    assert [t.name for t in fig.data] == ["correct", "incorrect"]
    right = int(geometry.correct.sum())
    assert [len(t.x) for t in fig.data] == [right, n - right]


def test_lottery_curves_compare_tickets_with_random_reinit_on_a_log_density_axis():
    density = 0.8 ** np.arange(5)
    tickets = LotteryTickets(density, np.linspace(0.9, 0.85, 5), np.ones(5),
                             np.linspace(0.9, 0.5, 5), np.ones(5))
    fig = assert_valid(lottery_curves(tickets))
    assert [t.name for t in fig.data] == ["ticket", "random re-init"]
    assert fig.layout.xaxis.type == "log"


def test_empty_results_give_a_no_data_figure():
    fig = assert_valid(accuracy_curves(make_sweep(methods=())))
    assert fig.layout.annotations[0].text == "no data yet"


def test_viz_pruning_imports_neither_torch_nor_streamlit():
    code = ("import viz.pruning, sys; "
            "assert 'torch' not in sys.modules and 'streamlit' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def make_regions(names=("dense", "magnitude", "random"), task="classification"):
    k, g = len(names), 6
    values = rng.integers(0, 2, (k, g, g)) if task == "classification" else rng.normal(size=(k, g, g))
    return PrunedRegions(list(names), np.linspace(-1, 1, g), np.linspace(-1, 1, g), values,
                         rng.uniform(0.5, 1, (k, g, g)), rng.normal(size=(20, 2)),
                         rng.integers(0, 2, 20) if task == "classification" else rng.normal(size=20),
                         np.array([0.9, 0.8, 0.5]), task, 2 if task == "classification" else 0)


def test_regions_side_by_side_draw_one_panel_per_model_and_one_legend():
    fig = assert_valid(regions_side_by_side(make_regions()))
    images = [t for t in fig.data if t.type == "image"]
    assert [t.xaxis for t in images] == ["x", "x2", "x3"]
    assert [a.text for a in fig.layout.annotations] == ["dense · 90.0%", "magnitude · 80.0%", "random · 50.0%"]
    assert sum(bool(t.showlegend) for t in fig.data if t.type == "scatter") == 2  # one per class


def test_regions_side_by_side_share_one_colour_scale_for_regression():
    regions = make_regions(task="regression")
    fig = assert_valid(regions_side_by_side(regions))
    assert [t.coloraxis for t in fig.data if t.type == "heatmap"] == ["coloraxis"] * 3
    bound = np.abs(np.concatenate([regions.values.ravel(), regions.labels])).max()
    assert np.isclose(fig.layout.coloraxis.cmax, bound)


def make_gallery(input_shape, n=12):
    sparsities = np.array([0.5, 0.9])
    dense = np.arange(n) % 3
    predictions = np.stack([dense, dense]).copy()
    predictions[0, 1] = predictions[1, 1] = 2  # sample 1 flips at 50%
    predictions[1, 4] = 0  # sample 4 at 90%
    flip_at = np.full(n, np.inf)
    flip_at[[1, 4]] = [0.5, 0.9]
    return FlipGallery("magnitude", sparsities, rng.uniform(size=(n, int(np.prod(input_shape)))),
                       dense, dense, predictions, flip_at, np.array([1, 4]), np.array([0, 2, 3]),
                       tuple(input_shape))


def test_flip_gallery_shows_fragile_images_above_robust_ones():
    fig = assert_valid(flip_gallery(make_gallery((1, 8, 8))))
    assert [t.type for t in fig.data] == ["heatmap"] * 5
    titles = [a.text for a in fig.layout.annotations]
    assert titles[:2] == ["#1: 1→2 at 50%", "#4: 1→0 at 90%"] and titles[-1] == "#3: 0 kept"


def test_flip_gallery_draws_signals_as_curves():
    fig = assert_valid(flip_gallery(make_gallery((1, 40))))
    assert [t.type for t in fig.data] == ["scatter"] * 5 and len(fig.data[0].y) == 40


def test_flip_gallery_colours_2d_points_by_the_sparsity_at_which_they_flip():
    gallery = make_gallery((2,))
    fig = assert_valid(flip_gallery(gallery))
    never, flips = fig.data
    assert len(never.x) == 10 and list(flips.marker.color) == [0.5, 0.9]


def test_an_empty_gallery_says_so():
    gallery = make_gallery((1, 8, 8))
    gallery.fragile, gallery.robust = np.array([], int), np.array([], int)
    fig = assert_valid(flip_gallery(gallery))
    assert fig.layout.annotations[0].text == "no samples to show"


def test_measure_curves_draw_the_chosen_measure_with_the_dense_value():
    sweep = make_sweep()
    sweep.sharpness, sweep.dense_sharpness = rng.uniform(1, 5, (3, 3)), 2.5
    fig = assert_valid(measure_curves(sweep, "sharpness (top Hessian eigenvalue)"))
    assert [list(t.y) for t in fig.data] == sweep.sharpness.tolist()
    assert fig.layout.shapes[0].y0 == 2.5  # the dense line


def test_measure_curves_say_when_an_older_sweep_lacks_the_measure():
    fig = assert_valid(measure_curves(make_sweep(), "train accuracy"))
    assert fig.layout.annotations[0].text == "no train accuracy in this sweep"


def test_channel_bars_show_each_layers_channels_before_and_after():
    from engine.results import ChannelRemoval

    removal = ChannelRemoval(["conv1", "conv2"], np.array([[4, 2], [8, 4]]), np.array([1000, 400]),
                             np.array([0.9, 0.8, 0.8]), 1e-7)
    fig = assert_valid(channel_bars(removal))
    assert [list(t.y) for t in fig.data] == [[4, 8], [2, 4]]
    assert "1,000 to 400 parameters" in fig.layout.title.text and "smaller 80.0%" in fig.layout.title.text
