"""NTK figures from small numpy results."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from viz_samples import assert_valid

from engine.results import (
    Eigenfunctions,
    ExtremeSamples,
    FourierContent,
    KernelSpectrum,
    KernelTrajectory,
    LayerKernels,
    ModeCurves,
    TargetPower,
    TargetPowerTrajectory,
)
from viz.ntk import (
    eigenfunctions_figure,
    extreme_samples_figure,
    fourier_figure,
    kernel_trajectory_figure,
    layer_kernels_figure,
    mode_curves_figure,
    power_law_fit,
    spectrum_figure,
    target_power_figure,
    target_power_trajectory_figure,
)
from viz.style import UIREVISION

ROOT = Path(__file__).resolve().parents[2]


def power_law(n=40, exponent=2.0):
    return KernelSpectrum(3.0 * np.arange(1, n + 1, dtype=float) ** -exponent, "trace")


def test_power_law_fit_recovers_an_exact_power_law():
    exponent, coefficient = power_law_fit(power_law(exponent=1.7).values)
    assert exponent == pytest.approx(1.7) and coefficient == pytest.approx(3.0)


def test_spectrum_is_log_log_with_the_exponent_in_the_legend():
    fig = assert_valid(spectrum_figure(power_law()))
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
    assert fig.data[1].name.startswith("fit: k^-2.00") and fig.layout.uirevision == UIREVISION


def test_spectrum_fit_names_its_ranks_and_the_number_of_points():
    """A fit over other points (another page's sample count) reads differently, and says why."""
    assert spectrum_figure(power_law(n=40)).data[1].name == "fit: k^-2.00 (ranks 2-20 of 40)"
    assert spectrum_figure(power_law(n=60)).data[1].name == "fit: k^-2.00 (ranks 2-30 of 60)"


def test_spectrum_without_positive_values_says_so():
    fig = assert_valid(spectrum_figure(KernelSpectrum(np.zeros(3))))
    assert fig.layout.annotations[0].text == "no positive eigenvalues"


def test_plane_eigenfunctions_are_a_grid_of_heatmaps():
    ef = Eigenfunctions(np.array([3.0, 2, 1, 0.5, 0.2]), np.random.default_rng(0).normal(size=(5, 4, 6)),
                        np.linspace(-1, 1, 6), np.linspace(-1, 1, 4), "x1")
    fig = assert_valid(eigenfunctions_figure(ef, columns=3))
    assert [t.type for t in fig.data] == ["heatmap"] * 5 and fig.data[4].xaxis == "x5"


def test_circle_eigenfunctions_are_curves_over_the_angle():
    angle = np.linspace(-np.pi, np.pi, 50)
    functions = np.stack([np.cos(angle), np.sin(angle)])
    ef = Eigenfunctions(np.array([2.0, 1.0]), functions, angle, x_label="angle")
    fig = assert_valid(eigenfunctions_figure(ef))
    assert [t.type for t in fig.data] == ["scatter"] * 2 and fig.layout.xaxis.title.text == "angle"


def test_target_power_compares_named_curves():
    curves = {"init": TargetPower(np.array([0.5, 0.8, 1.0]), np.ones(3)),
              "trained": TargetPower(np.array([0.9, 1.0, 1.0]), np.ones(3))}
    fig = assert_valid(target_power_figure(curves))
    assert [t.name for t in fig.data] == ["init", "trained"]


def test_mode_curves_pair_measured_and_predicted_by_colour():
    steps = np.arange(10)
    predicted = np.exp(-np.outer(steps, [0.5, 0.1]))
    curves = ModeCurves(steps, predicted, predicted * 1.1, np.array([5.0, 1.0]))
    fig = assert_valid(mode_curves_figure(curves))
    assert len(fig.data) == 4 and fig.data[0].line.color == fig.data[1].line.color
    assert fig.data[1].line.dash == "dash" and fig.layout.yaxis.type == "log"


def test_kernel_trajectory_shows_changes_and_alignment_in_two_panels():
    steps = np.arange(5)
    trajectory = KernelTrajectory(steps, steps * 0.1, steps * 0.01, 1 - steps * 0.05, steps * 0.02,
                                  alignment=0.3 + steps * 0.05)
    fig = assert_valid(kernel_trajectory_figure(trajectory))
    assert [t.xaxis for t in fig.data] == ["x", "x", "x", "x2", "x2"]


def extremes(input_shape, k=2, per_side=2):
    rng = np.random.default_rng(0)
    size = (k, 2 * per_side)
    return ExtremeSamples(np.array([3.0, 1.0])[:k], rng.integers(0, 50, size), np.sort(rng.normal(size=size), 1),
                          rng.uniform(size=(*size, *input_shape)), rng.integers(0, 10, size))


def test_image_samples_are_a_grid_of_square_grey_heatmaps_one_row_per_eigenvector():
    fig = assert_valid(extreme_samples_figure(extremes((1, 8, 8))))
    assert [t.type for t in fig.data] == ["heatmap"] * 8 and fig.data[5].xaxis == "x6"
    assert fig.data[0].z.shape == (8, 8) and fig.layout.yaxis6.scaleanchor == "x6"
    assert fig.layout.yaxis.autorange == "reversed" and fig.layout.yaxis5.title.text.startswith("φ2")


def test_signal_samples_are_curves_coloured_by_their_end():
    fig = assert_valid(extreme_samples_figure(extremes((1, 40))))
    assert [t.type for t in fig.data] == ["scatter"] * 8 and len(fig.data[0].y) == 40
    assert fig.data[0].line.color == fig.data[1].line.color != fig.data[3].line.color


def test_fourier_content_is_a_heatmap_with_the_dominant_frequencies_marked():
    content = FourierContent(np.ones(3), np.arange(5), np.eye(5)[[0, 1, 1]], np.array([0, 1, 1]))
    fig = assert_valid(fourier_figure(content))
    assert fig.data[0].type == "heatmap" and list(fig.data[1].x) == [0, 1, 1]
    assert "cycles around the circle" in fig.layout.xaxis.title.text


def test_layer_shares_are_bars_that_add_to_one_beside_per_layer_spectra():
    values = np.array([[4.0, 1.0, 0.5], [2.0, 1.0, 0.1]])
    layers = LayerKernels(["layers.fc1", "layers.out"], np.array([3.0, 1.0]), values, values.sum(0))
    fig = assert_valid(layer_kernels_figure(layers))
    assert list(fig.data[0].y) == [0.75, 0.25] and [t.name for t in fig.data[1:]] == [
        "layers.fc1", "layers.out", "whole kernel"]
    assert fig.layout.xaxis2.type == "log"


def test_target_power_over_training_has_a_line_per_k():
    trajectory = TargetPowerTrajectory(np.arange(4), np.array([1, 4]), np.array([[0.1, 0.4]] * 4))
    fig = assert_valid(target_power_trajectory_figure(trajectory))
    assert [t.name for t in fig.data] == ["top 1", "top 4"]


def test_viz_ntk_imports_neither_torch_nor_streamlit():
    code = "import viz.ntk, sys; assert 'torch' not in sys.modules and 'streamlit' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
