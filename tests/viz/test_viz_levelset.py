"""Level-set figures, from synthetic numpy results."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.results import ConfidenceMap, LevelSetPath, TriangleConfidence, WidthProbe
from viz import levelset as fig_levelset
from viz_samples import assert_valid

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


def test_viz_levelset_imports_neither_torch_nor_streamlit():
    code = ("import viz.levelset, sys; "
            "assert 'torch' not in sys.modules and 'streamlit' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
