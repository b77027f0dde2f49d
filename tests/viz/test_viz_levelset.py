"""Level-set figures, from synthetic numpy results."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from viz_samples import assert_valid

from engine.results import ConfidenceMap, LevelSetPath, SampleGallery, TriangleConfidence, WidthProbe
from viz import levelset as fig_levelset

ROOT = Path(__file__).resolve().parents[2]


def make_path(n_pairs=None, steps=10, dim=2, input_shape=None):
    """A straight walk toward the target with confidence dropping a little; a batch when
    n_pairs is given (pairs start at different points)."""
    B = n_pairs or 1
    t = np.linspace(0, 0.8, steps + 1)[:, None, None]
    source = np.linspace(-1, 1, B * dim).reshape(B, dim) * 0.5
    target = np.full((B, dim), 0.9)
    path = source[None] + t * (target - source)[None]  # (T, B, D)
    confidence = 0.9 - 0.02 * t[:, :, 0] * np.ones((1, B))
    l2 = np.linalg.norm(path - target, axis=-1)
    ssim = 1 - l2 / l2.max() if input_shape else None
    squeeze = (lambda a: a) if n_pairs else (lambda a: a[:, 0])
    return LevelSetPath(
        path=squeeze(path), confidence=squeeze(confidence), step=np.arange(steps + 1),
        accepted=squeeze(np.ones((steps, B), bool)), l2=squeeze(l2),
        linf=squeeze(np.abs(path - target).max(-1)), target=target if n_pairs else target[0],
        source_class=np.zeros(B, int) if n_pairs else np.array(0),
        ssim=None if ssim is None else squeeze(ssim), input_shape=input_shape,
        settings={"threshold": 0.05, "bounds": [0.0, 1.0]},
    )


def make_map(n=21):
    grid = np.linspace(-1, 1, n)
    xx, yy = np.meshgrid(grid, grid * 0.5)
    return ConfidenceMap(grid, grid * 0.5, 1 / (1 + np.exp(-(xx + yy))), 0)


def make_triangle(resolution=4):
    weights = np.array([(i / resolution, j / resolution) for i in range(resolution + 1)
                        for j in range(resolution + 1 - i)])
    vertices = np.array([[0.0, 0.0], [2.0, 0.0], [0.5, 1.5]])
    confidence = 0.95 - 0.05 * weights.sum(1)
    return TriangleConfidence(weights, weights @ vertices[1:], vertices, confidence, 3, 0.95,
                              float(confidence.mean()), np.array([0.01, 0.1]), np.array([0.4, 1.0]),
                              np.array([0.9, 0.9, 0.9]), {"resolution": resolution})


def test_path_on_map_draws_the_map_and_each_pairs_path_line_source_and_target():
    fig = assert_valid(fig_levelset.path_on_map(make_map(), make_path(n_pairs=2)))
    names = [trace.name for trace in fig.data]
    assert names.count("path") == 2 and names.count("target") == 2
    assert names.count("source's level set") == 2  # both sources are of the map's class
    assert np.asarray(fig.data[0].z).shape == (21, 21)


def test_path_on_map_puts_the_path_at_its_coordinates():
    path = make_path()
    fig = fig_levelset.path_on_map(make_map(), path)
    trace = next(t for t in fig.data if t.name == "path")
    np.testing.assert_allclose(np.column_stack([trace.x, trace.y]), path.path)


def test_path_on_map_refuses_inputs_that_are_not_2d():
    with pytest.raises(ValueError, match="2-D"):
        fig_levelset.path_on_map(make_map(), make_path(dim=3))


def test_snapshot_strip_shows_spread_points_then_the_target_with_confidences():
    path = make_path(steps=20, dim=64, input_shape=(1, 8, 8))
    fig = assert_valid(fig_levelset.snapshot_strip(path, n_snapshots=5))
    assert len(fig.data) == 6 and np.asarray(fig.data[0].z).shape == (8, 8)
    titles = [a.text for a in fig.layout.annotations]
    assert titles[0].startswith("step 0<br>p 0.900") and titles[-1] == "target"


def test_snapshot_indices_include_the_first_and_last_points():
    assert fig_levelset.snapshot_indices(21, 5).tolist() == [0, 5, 10, 15, 20]
    assert fig_levelset.snapshot_indices(3, 8).tolist() == [0, 1, 2]


def test_snapshot_strip_draws_colour_images_as_rgb():
    fig = assert_valid(fig_levelset.snapshot_strip(make_path(dim=48, input_shape=(3, 4, 4)),
                                                   n_snapshots=2, show_target=False))
    assert fig.data[0].type == "image"


def test_path_profile_has_a_panel_for_ssim_only_for_images():
    def titles(path):
        return [a.text for a in assert_valid(fig_levelset.path_profile(path)).layout.annotations]

    assert "SSIM to the target" not in titles(make_path())
    assert "SSIM to the target" in titles(make_path(dim=64, input_shape=(1, 8, 8)))


def test_path_profile_of_a_batch_adds_the_mean_of_the_pairs():
    path = make_path(n_pairs=3)
    fig = assert_valid(fig_levelset.path_profile(path))
    mean = next(t for t in fig.data if t.name == "confidence, mean")
    np.testing.assert_allclose(mean.y, path.confidence.mean(axis=1))


def test_triangle_map_places_points_in_the_plane_and_writes_the_statistics():
    tri = make_triangle()
    fig = assert_valid(fig_levelset.triangle_map(tri))
    np.testing.assert_allclose(np.column_stack([fig.data[0].x, fig.data[0].y]), tri.plane)
    assert "40% above p−0.01" in fig.layout.annotations[0].text


def test_width_profile_draws_each_direction_and_the_mean():
    probe = WidthProbe(np.linspace(0, 1, 5), np.linspace(0.9, 0.5, 15).reshape(3, 5), 0.9, 1)
    fig = assert_valid(fig_levelset.width_profile(probe))
    assert len(fig.data) == 4
    np.testing.assert_allclose(fig.data[-1].y, probe.confidence.mean(axis=0))


def test_compare_paths_draws_one_curve_per_run_and_panel():
    fig = assert_valid(fig_levelset.compare_paths([make_path(n_pairs=2), make_path()], ["standard", "robust"]))
    assert len(fig.data) == 4


# ---------------------------------------------------------------- picking samples


def make_gallery(shape=(1, 3, 3), labels=(0, 0, 1, 2, 2, 2)):
    """Samples with distinct values (sample k is filled with k), test indices 10, 11, ..."""
    n, size = len(labels), int(np.prod(shape))
    x = np.repeat(np.arange(n, dtype=float)[:, None], size, axis=1)
    return SampleGallery(index=np.arange(10, 10 + n), x=x, label=np.array(labels),
                         predicted=np.array(labels), input_shape=shape)


def selection(*points):
    """A Streamlit plotly selection event of (curve_number, point_index) points."""
    return {"selection": {"points": [{"curve_number": c, "point_index": i, "point_number": i}
                                     for c, i in points]}}


def samples_trace(fig):
    return next(t for t in fig.data if t.name == fig_levelset.SAMPLES)


def test_gallery_grid_puts_each_class_in_its_column_ranked_downward():
    cells = fig_levelset.gallery_grid(np.array([0, 0, 1, 2, 2, 2]), n_classes=3)
    np.testing.assert_array_equal(cells, [[0, 0], [1, 0], [0, 1], [0, 2], [1, 2], [2, 2]])


def test_gallery_grid_wraps_rows_when_classes_are_too_many_for_columns():
    cells = fig_levelset.gallery_grid(np.arange(5), n_classes=30, columns=2)
    np.testing.assert_array_equal(cells, [[0, 0], [0, 1], [1, 0], [1, 1], [2, 0]])


def test_sample_gallery_draws_each_image_in_its_cell():
    gallery = make_gallery()
    fig = assert_valid(fig_levelset.sample_gallery(gallery))
    mosaic = np.asarray(fig.data[0].z, dtype=float)
    for k, (row, col) in enumerate(fig_levelset.gallery_grid(gallery.label, 3)):
        np.testing.assert_array_equal(mosaic[row * 4:row * 4 + 3, col * 4:col * 4 + 3], k)
    assert np.isnan(mosaic[3]).all(), "a gap between rows"


def test_sample_gallery_frames_the_chosen_samples_in_their_roles_colours():
    gallery = make_gallery()
    fig = assert_valid(fig_levelset.sample_gallery(gallery, chosen=(12, 10, 15)))
    frames = {shape.name: shape for shape in fig.layout.shapes}
    assert list(frames) == list(fig_levelset.ROLES)
    centres = fig_levelset.gallery_grid(gallery.label, 3) * 4 + 1  # 3 x 3 images, a 1-pixel gap
    for role, position in enumerate([2, 0, 5]):
        frame = frames[fig_levelset.ROLES[role]]
        assert frame.line.color == fig_levelset.role_color(role)
        assert (frame.x0 + frame.x1) / 2 == centres[position, 1] and (frame.y0 + frame.y1) / 2 == centres[position, 0]


def test_sample_gallery_draws_signals_as_lines_in_their_cells():
    gallery = make_gallery(shape=(1, 40))
    fig = assert_valid(fig_levelset.sample_gallery(gallery))
    assert fig.data[0].type == "scatter" and fig.data[0].mode == "lines"
    xs = np.array([v for v in fig.data[0].x if v is not None], dtype=float)
    assert len(xs) == 6 * 40 and xs.max() < 3 * 2.0, "six signals inside three columns"


def test_a_click_on_a_thumbnail_picks_its_test_sample():
    fig = fig_levelset.sample_gallery(make_gallery())
    curve = [t.name for t in fig.data].index(fig_levelset.SAMPLES)
    assert fig_levelset.picked_samples(fig, selection((curve, 3))) == [13]


def test_clicks_on_other_traces_or_no_click_pick_nothing():
    fig = fig_levelset.sample_gallery(make_gallery())
    assert fig_levelset.picked_samples(fig, selection((0, 3))) == []
    assert fig_levelset.picked_samples(fig, None) == []
    assert fig_levelset.picked_samples(fig, selection()) == []


def test_a_click_on_the_map_picks_the_2d_sample_under_it():
    gallery = SampleGallery(index=np.array([4, 7, 9]), x=np.array([[0.1, 0.2], [0.5, -0.3], [-0.6, 0.0]]),
                            label=np.array([0, 1, 1]), predicted=np.array([0, 1, 0]), input_shape=(2,))
    fig = assert_valid(fig_levelset.path_on_map(make_map(), make_path(n_pairs=2), gallery=gallery, chosen=(9, 4, 7)))
    curve = [t.name for t in fig.data].index(fig_levelset.SAMPLES)
    assert curve == len(fig.data) - 1, "the samples are drawn on top, where clicks land"
    np.testing.assert_allclose(np.column_stack([fig.data[curve].x, fig.data[curve].y]), gallery.x)
    named = {a.text: (a.x, a.y) for a in fig.layout.annotations}
    assert named == {"source": (-0.6, 0.0), "target A": (0.1, 0.2), "target B": (0.5, -0.3)}
    assert fig_levelset.picked_samples(fig, selection((curve, 1))) == [7]


def test_snapshot_strip_of_a_signal_draws_lines_over_the_dotted_target():
    path = make_path(steps=20, dim=40, input_shape=(1, 40))
    fig = assert_valid(fig_levelset.snapshot_strip(path, n_snapshots=4))
    assert {t.type for t in fig.data} == {"scatter"}
    dotted = [t for t in fig.data if t.line.dash == "dot"]
    assert len(dotted) == 4, "the target behind each snapshot, not behind itself"
    np.testing.assert_allclose(dotted[0].y, path.target)


def test_viz_levelset_imports_neither_torch_nor_streamlit():
    code = ("import viz.levelset, sys; "
            "assert 'torch' not in sys.modules and 'streamlit' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
