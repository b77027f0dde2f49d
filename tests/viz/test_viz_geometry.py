"""Figures of representation geometry, built from small synthetic results."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest
from viz_samples import assert_valid

from engine.results import Embedding, EmbeddingFrames, GeometryCurves, RDMSet, SimilarityMatrix, UnitMatch
from viz.geometry import (
    BAR_LIMIT,
    SHADES,
    alignment_by_layer,
    embedding_animation,
    embedding_scatter,
    geometry_curves,
    parse_sample_numbers,
    rdm_panels,
    sample_gallery,
    sample_picture,
    selected_samples,
    shared_bounds,
    similarity_heatmap,
    unit_match_figure,
)
from viz.style import WEBGL_THRESHOLD, class_color

ROOT = Path(__file__).resolve().parents[2]
rng = np.random.default_rng(0)


def make_embedding(n=60, dim=2, categorical=True):
    values = np.arange(n) % 3 if categorical else rng.normal(size=n)
    return Embedding(rng.normal(size=(n, dim)), values, categorical,
                     hover=np.array([f"sample {i}" for i in range(n)]), method="umap")


def make_curves(n_steps=5):
    steps = np.arange(n_steps) * 100
    nc1 = np.column_stack([np.full(n_steps, np.nan), np.exp(-np.arange(n_steps))])  # last layer only
    rank = np.column_stack([np.linspace(8, 3, n_steps), np.linspace(5, 2, n_steps)])
    return GeometryCurves(steps, ["layers.act1", "layers.act2"], {"nc1": nc1, "effective_rank": rank})


# ---- embeddings


def test_class_embedding_has_one_trace_per_class_in_the_palette():
    fig = assert_valid(embedding_scatter(make_embedding()))
    assert [t.marker.color for t in fig.data] == [class_color(k) for k in range(3)]


def test_class_names_label_the_legend():
    view = make_embedding()
    view.class_names = ["cat", "dog", "eel"]
    assert [t.name for t in embedding_scatter(view).data] == ["cat", "dog", "eel"]


def test_value_embedding_uses_a_colour_bar():
    fig = assert_valid(embedding_scatter(make_embedding(categorical=False)))
    assert len(fig.data) == 1 and fig.layout.coloraxis.colorbar.title.text == "class"


def test_every_point_carries_its_hover_text():
    fig = embedding_scatter(make_embedding())
    assert sorted(text for t in fig.data for text in t.hovertext) == sorted(f"sample {i}" for i in range(60))


def test_three_dimensional_embedding_is_a_3d_scatter():
    fig = assert_valid(embedding_scatter(make_embedding(dim=3)))
    assert all(isinstance(t, go.Scatter3d) for t in fig.data)


def test_many_points_use_webgl():
    fig = embedding_scatter(make_embedding(n=WEBGL_THRESHOLD + 1))
    assert all(isinstance(t, go.Scattergl) for t in fig.data)


def test_shared_bounds_fix_the_axes_across_frames():
    frames = [rng.normal(size=(10, 2)), 5 + rng.normal(size=(10, 2))]
    bounds = shared_bounds(frames)
    fig = embedding_scatter(Embedding(frames[0], np.zeros(10)), bounds=bounds)
    assert tuple(fig.layout.xaxis.range) == tuple(bounds[0]) and bounds[0, 1] > frames[1][:, 0].max()


def test_empty_embedding_says_no_data_yet():
    fig = assert_valid(embedding_scatter(Embedding(np.zeros((0, 2)), np.zeros(0))))
    assert fig.layout.annotations[0].text == "no data yet"


# ---- pictures of samples, picking samples, animation


def with_samples(view, inputs, shape):
    view.inputs, view.input_shape = inputs, shape
    return view


def test_image_picture_has_a_row_per_pixel_row_and_two_blocks_per_pixel():
    image = np.zeros((3, 4))
    image[1, 2] = 1.0
    rows = sample_picture(image.ravel(), [1, 3, 4], 0.0, 1.0).split("<br>")
    assert rows[0] == SHADES[0] * 8 and rows[1] == SHADES[0] * 4 + "██" + SHADES[0] * 2 and len(rows) == 3


def test_signal_picture_is_a_sparkline_from_lowest_to_highest():
    assert sample_picture(np.linspace(0, 1, 8), [1, 8], 0.0, 1.0) == "▁▂▃▄▅▆▇█"


def test_point_picture_is_its_coordinates():
    assert sample_picture(np.array([0.5, -1.25]), [2], -2.0, 2.0) == "(0.5, -1.25)"


def test_hover_shows_each_sample_after_its_text():
    inputs = rng.uniform(size=(60, 16))
    fig = embedding_scatter(with_samples(make_embedding(), inputs, [1, 4, 4]))
    first = fig.data[0]
    assert first.hovertext[1] == f"sample {first.customdata[1]}<br>" + sample_picture(
        inputs[first.customdata[1]], [1, 4, 4], inputs.min(), inputs.max())
    assert "monospace" in fig.layout.hoverlabel.font.family


def test_each_point_carries_its_sample_number():
    view = make_embedding()
    fig = embedding_scatter(view)
    for trace, k in zip(fig.data, range(3)):
        assert list(trace.customdata) == list(np.flatnonzero(view.values == k))
        np.testing.assert_array_equal(trace.x, view.points[trace.customdata, 0])


def test_selected_samples_read_the_numbers_of_a_streamlit_selection():
    # The shape of Streamlit's selection state (st.plotly_chart docs), for a click and a lasso.
    selection = {"selection": {"points": [
        {"curve_number": 1, "point_index": 4, "x": 0.1, "y": 0.2, "customdata": 13},
        {"curve_number": 0, "point_index": 0, "x": 0.3, "y": 0.4, "customdata": [2]},
        {"curve_number": 1, "point_index": 4, "x": 0.1, "y": 0.2, "customdata": 13},
    ], "point_indices": [4, 0, 4], "box": [], "lasso": []}}
    assert selected_samples(selection) == [13, 2] and selected_samples(None) == []


def test_typed_sample_numbers_out_of_range_are_refused_with_a_sentence():
    assert parse_sample_numbers("3, 17 3", 20) == [3, 17]
    with pytest.raises(ValueError, match="from 0 to 19; '20'"):
        parse_sample_numbers("3, 20", 20)


def test_gallery_draws_picked_images_as_pictures():
    inputs = rng.uniform(size=(60, 16))
    fig = assert_valid(sample_gallery(with_samples(make_embedding(), inputs, [1, 4, 4]), [5, 7]))
    assert [type(t) for t in fig.data] == [go.Heatmap, go.Heatmap]
    np.testing.assert_array_equal(fig.data[1].z, inputs[7].reshape(4, 4))
    assert [a.text for a in fig.layout.annotations] == ["#5 · class 2", "#7 · class 1"]


def test_gallery_draws_picked_signals_as_curves():
    inputs = rng.normal(size=(60, 40))
    fig = assert_valid(sample_gallery(with_samples(make_embedding(), inputs, [1, 40]), [9]))
    assert isinstance(fig.data[0], go.Scatter) and np.array_equal(fig.data[0].y, inputs[9])


def test_gallery_marks_picked_points_among_all_in_input_space():
    inputs = rng.normal(size=(60, 2))
    fig = assert_valid(sample_gallery(with_samples(make_embedding(), inputs, [2]), [4, 1]))
    picked = fig.data[-1]
    assert list(picked.text) == ["#4", "#1"] and np.array_equal(picked.x, inputs[[4, 1], 0])


def test_gallery_without_stored_samples_says_so():
    fig = sample_gallery(make_embedding(), [1])
    assert fig.layout.annotations[0].text == "the samples are not stored with this embedding"


def make_film(n_steps=4, n=30):
    steps = np.arange(n_steps) * 50
    points = rng.normal(size=(n_steps, n, 2)) * np.arange(1, n_steps + 1)[:, None, None]
    return EmbeddingFrames(steps, points, np.arange(n) % 3, True)


def test_animation_has_a_frame_and_a_slider_step_per_checkpoint():
    film = make_film()
    fig = assert_valid(embedding_animation(film))
    assert [f.name for f in fig.frames] == ["0", "50", "100", "150"]
    assert [s.label for s in fig.layout.sliders[0].steps] == ["0", "50", "100", "150"]


def test_animation_frames_move_each_class_trace_to_that_checkpoint():
    film = make_film()
    fig = embedding_animation(film)
    class_one = np.flatnonzero(film.values == 1)
    np.testing.assert_array_equal(fig.frames[2].data[1].x, film.points[2, class_one, 0])


def test_animation_axes_hold_every_frame():
    film = make_film()
    fig = embedding_animation(film)
    low, high = fig.layout.xaxis.range
    assert low < film.points[..., 0].min() and high > film.points[..., 0].max()


# ---- similarity and RDMs


def test_cka_heatmap_labels_rows_and_columns():
    view = SimilarityMatrix(rng.uniform(size=(3, 2)), ["a", "b", "c"], ["x", "y"])
    heatmap = assert_valid(similarity_heatmap(view)).data[0]
    assert list(heatmap.y) == ["a", "b", "c"] and list(heatmap.x) == ["x", "y"]


def test_cka_heatmap_scale_is_zero_to_one():
    fig = similarity_heatmap(SimilarityMatrix(np.array([[1.0, 0.2], [0.2, 1.0]]), ["a", "b"], ["a", "b"]))
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == (0.0, 1.0)


def test_rdm_panels_share_one_colour_scale():
    matrices = rng.uniform(0, 2, size=(3, 8, 8))
    fig = assert_valid(rdm_panels(RDMSet(matrices, ["fc1", "fc2", "out"])))
    assert len(fig.data) == 3 and {t.coloraxis for t in fig.data} == {"coloraxis"}
    assert fig.layout.coloraxis.cmax == matrices.max()


# ---- measures over training


def test_curves_skip_layers_that_were_not_measured():
    fig = assert_valid(geometry_curves(make_curves(), ["nc1"]))
    assert [t.name for t in fig.data] == ["layers.act2"]


def test_each_layer_appears_once_in_the_legend():
    fig = geometry_curves(make_curves(), ["effective_rank", "nc1"])
    assert sorted(t.name for t in fig.data if t.showlegend) == ["layers.act1", "layers.act2"]


def test_nc1_is_on_a_log_axis():
    fig = geometry_curves(make_curves(), ["effective_rank", "nc1"])
    assert fig.layout.yaxis2.type == "log"


# ---- matched units


def test_few_matched_units_are_bars_sorted_best_first():
    fig = assert_valid(unit_match_figure(UnitMatch(np.array([0.2, 0.9, 0.5]), np.array([2, 0, 1]))))
    assert isinstance(fig.data[0], go.Bar) and list(fig.data[0].y) == [0.9, 0.5, 0.2]


def test_many_matched_units_or_several_pairs_are_curves():
    matches = [UnitMatch(rng.uniform(size=BAR_LIMIT + 1), np.arange(BAR_LIMIT + 1), "wide"),
               UnitMatch(rng.uniform(size=8), np.arange(8), "narrow")]
    fig = assert_valid(unit_match_figure(matches))
    assert all(isinstance(t, go.Scatter) for t in fig.data) and [t.name for t in fig.data] == ["wide", "narrow"]


def test_viz_geometry_imports_neither_torch_nor_streamlit():
    code = ("import viz.geometry, sys; "
            "assert 'torch' not in sys.modules and 'streamlit' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_alignment_by_layer_draws_input_and_target_cka_per_run_at_the_last_checkpoint():
    curves = GeometryCurves(np.array([0, 10]), ["a1", "out"],
                            {"cka_input": np.array([[0.5, 0.4], [0.9, 0.8]]),
                             "cka_target": np.array([[0.1, 0.2], [0.3, 0.6]])})
    fig = assert_valid(alignment_by_layer({"tanh": curves, "relu": curves}))
    assert [t.name for t in fig.data][:2] == ["tanh: CKA with the inputs", "tanh: CKA with the targets"]
    assert list(fig.data[0].y) == [0.9, 0.8] and list(fig.data[1].y) == [0.3, 0.6]
    assert fig.data[0].line.color != fig.data[2].line.color
