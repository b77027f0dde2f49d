"""Figures of representation geometry, built from small synthetic results."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import plotly.graph_objects as go

from engine.results import Embedding, GeometryCurves, RDMSet, SimilarityMatrix, UnitMatch
from viz.geometry import (
    BAR_LIMIT, embedding_scatter, geometry_curves, rdm_panels, shared_bounds, similarity_heatmap,
    unit_match_figure,
)
from viz.style import WEBGL_THRESHOLD, class_color
from viz_samples import assert_valid

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
