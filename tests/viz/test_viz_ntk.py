"""NTK figures from small numpy results."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.results import Eigenfunctions, KernelSpectrum, KernelTrajectory, ModeCurves, TargetPower
from viz.ntk import (
    eigenfunctions_figure, kernel_trajectory_figure, mode_curves_figure, power_law_fit, spectrum_figure,
    target_power_figure,
)
from viz.style import UIREVISION
from viz_samples import assert_valid

ROOT = Path(__file__).resolve().parents[2]


def power_law(n=40, exponent=2.0):
    return KernelSpectrum(3.0 * np.arange(1, n + 1, dtype=float) ** -exponent, "trace")


def test_power_law_fit_recovers_an_exact_power_law():
    exponent, coefficient = power_law_fit(power_law(exponent=1.7).values)
    assert exponent == pytest.approx(1.7) and coefficient == pytest.approx(3.0)


def test_spectrum_is_log_log_with_the_exponent_in_the_legend():
    fig = assert_valid(spectrum_figure(power_law()))
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
    assert fig.data[1].name == "fit: k^-2.00" and fig.layout.uirevision == UIREVISION


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


def test_viz_ntk_imports_neither_torch_nor_streamlit():
    code = "import viz.ntk, sys; assert 'torch' not in sys.modules and 'streamlit' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
