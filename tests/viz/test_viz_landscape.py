"""Loss-landscape figures, from synthetic numpy results."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from viz_samples import assert_valid

from engine.results import ConvexityMap, LinearPath, Sharpness, Surface, Trajectory
from viz import landscape as fig_landscape
from viz.style import SPLIT_COLORS

ROOT = Path(__file__).resolve().parents[2]


def make_surface(nx=7, ny=5, scale=1.0, accuracy=True):
    """A bowl a^2 + 2 b^2 (times scale) on a non-square grid, or its b = 0 line when ny is 0."""
    xs = np.linspace(-1, 1, nx)
    if ny == 0:
        loss = scale * xs ** 2
        return Surface(xs, None, loss, 1 - loss / 4 if accuracy else None)
    ys = np.linspace(-0.5, 0.5, ny)
    loss = scale * (xs[None, :] ** 2 + 2 * ys[:, None] ** 2)
    return Surface(xs, ys, loss, 1 - loss / 4 if accuracy else None)


def make_trajectory(n=6, with_losses=True):
    coords = np.column_stack([np.linspace(0.9, 0.0, n), np.linspace(0.4, 0.0, n)])
    losses = np.linspace(1.0, 0.1, n) if with_losses else None
    return Trajectory(np.arange(n) * 10.0, coords, np.array([0.8, 0.15]), losses, losses)


def test_contour_is_valid_and_shows_the_loss_grid():
    fig = assert_valid(fig_landscape.contour(make_surface()))
    assert np.asarray(fig.data[0].z).shape == (5, 7)


def test_contour_with_a_trajectory_labels_its_start_and_end():
    fig = assert_valid(fig_landscape.contour(make_surface(), make_trajectory()))
    text = list(fig.data[1].text)
    assert text[0] == "start" and text[-1] == "end" and set(text[1:-1]) == {""}


def test_contour_axes_show_the_explained_variance():
    fig = fig_landscape.contour(make_surface(), make_trajectory(with_losses=False))
    assert fig.layout.xaxis.title.text.startswith("PC1 (80%")


def test_contour_marks_the_surfaces_models_at_their_coordinates():
    surface = make_surface()
    surface.marks, surface.mark_names = np.array([[0.0, 0.0], [1.0, 0.0], [0.3, 0.4]]), ["A", "B", "C"]
    fig = assert_valid(fig_landscape.contour(surface))
    assert list(fig.data[1].x) == [0.0, 1.0, 0.3] and list(fig.data[1].text) == ["A", "B", "C"]


def test_log_scale_shows_log10_of_the_clipped_loss():
    z = fig_landscape.shown_values(make_surface(scale=100.0), log=True, clip=10.0)
    assert z.max() == pytest.approx(1.0)
    assert z.min() == pytest.approx(np.log10(fig_landscape.LOG_FLOOR))  # the zero at the centre


def test_surface_3d_is_a_valid_surface_with_clipped_values():
    fig = assert_valid(fig_landscape.surface_3d(make_surface(scale=10.0), clip=5.0))
    assert fig.data[0].type == "surface"
    assert np.max(fig.data[0].z) == 5.0


def test_compare_shares_one_colour_range_and_the_axes():
    surfaces = [make_surface(scale=1.0), make_surface(scale=3.0)]
    fig = assert_valid(fig_landscape.compare(surfaces, titles=["flat", "sharp"]))
    contours = [t for t in fig.data if t.type == "contour"]
    assert {(t.zmin, t.zmax) for t in contours} == {(0.0, 3.0 * 1.5)}
    assert fig.layout.xaxis2.matches == "x"


@pytest.mark.parametrize("log, clip", [(False, None), (True, None), (True, 2.0)])
def test_surface_and_contour_of_one_grid_carry_the_same_values_the_same_way_round(log, clip):
    """The 3-D surface and the contour are one grid: z[i, j] is the loss at (xs[j], ys[i]) in both."""
    grid = make_surface(nx=7, ny=5, scale=3.0)
    grid.loss[0, -1] = 50.0  # one corner apart: (xs[-1], ys[0])
    contour = fig_landscape.contour(grid, log=log, clip=clip).data[0]
    surface = fig_landscape.surface_3d(grid, log=log, clip=clip).data[0]
    assert np.array_equal(contour.x, surface.x) and np.array_equal(contour.y, surface.y)
    assert np.array_equal(np.asarray(contour.z), np.asarray(surface.z))
    assert (contour.zmin, contour.zmax) == (surface.cmin, surface.cmax)


def test_surface_keeps_the_planes_proportions_and_looks_from_the_contours_lower_edge():
    grid = make_surface(nx=7, ny=5)  # a plane twice as long (direction 1) as it is wide
    scene = fig_landscape.surface_3d(grid).layout.scene
    assert (scene.aspectmode, scene.aspectratio.x, scene.aspectratio.y) == ("manual", 1.0, 0.5)
    assert scene.camera.eye.y < 0 and abs(scene.camera.eye.x) < abs(scene.camera.eye.y)


def test_compare_in_3d_gives_every_scene_the_same_vertical_range():
    surfaces = [make_surface(), make_surface(scale=2.0)]
    fig = assert_valid(fig_landscape.compare(surfaces, kind="surface"))
    assert tuple(fig.layout.scene.zaxis.range) == tuple(fig.layout.scene2.zaxis.range) == (0.0, 3.0)


def test_curves_show_train_and_test_loss_and_accuracy_as_four_traces():
    fig = assert_valid(fig_landscape.curves(make_surface(ny=0), make_surface(ny=0, scale=2.0)))
    names = ["train loss", "train accuracy", "test loss", "test accuracy"]
    assert [t.name for t in fig.data] == names
    assert fig.data[2].line.color == SPLIT_COLORS["test"]


def test_curves_without_accuracy_show_only_the_loss():
    fig = assert_valid(fig_landscape.curves(make_surface(ny=0, accuracy=False)))
    assert len(fig.data) == 1 and "xaxis2" not in fig.to_dict()["layout"]


def test_linear_path_title_gives_the_barrier():
    path = LinearPath(np.linspace(0, 1, 5), np.array([0.1, 0.4, 0.5, 0.3, 0.1]), None, 0.4)
    fig = assert_valid(fig_landscape.curves(path, x_title="t"))
    assert "barrier 0.4" in fig.layout.title.text


def test_sharpness_draws_each_eigenvalue_and_the_two_over_lr_line():
    result = Sharpness(np.arange(5.0), np.array([[1.0, 0.5]] * 5), lr=0.1)
    fig = assert_valid(fig_landscape.sharpness(result))
    assert len(fig.data) == 2
    assert fig.layout.shapes[0].y0 == pytest.approx(20.0)


def test_spectral_density_is_valid_on_a_log_axis():
    grid = np.linspace(-1, 5, 200)
    density = np.exp(-0.5 * (grid - 2) ** 2 / 0.01)
    fig = assert_valid(fig_landscape.spectral_density(grid, density))
    assert fig.layout.yaxis.type == "log" and np.min(fig.data[0].y) > 0


def test_convexity_map_is_a_valid_heatmap():
    ratio = np.full((2, 3), 0.1)
    result = ConvexityMap(np.arange(3.0), np.arange(2.0), ratio, np.ones((2, 3)), -0.1 * ratio)
    assert assert_valid(fig_landscape.convexity(result)).data[0].type == "heatmap"


def test_viz_landscape_imports_neither_torch_nor_streamlit():
    code = ("import viz.landscape, sys; "
            "assert 'torch' not in sys.modules and 'streamlit' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
