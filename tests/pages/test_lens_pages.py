"""Lens pages in AppTest: each computes its analyses of a stored run as jobs and draws them."""
from __future__ import annotations

import json
import time

import pytest

import app_pages.lab as lab
from apptest_helpers import plotly_specs
from engine.experiment import Experiment, train_job
from engine.models import ModelSpec
from engine.train import TrainConfig


class Quiet:
    cancelled = False

    def report(self, *args, **kwargs):
        pass


@pytest.fixture
def stored_run(lab_home):
    experiment = Experiment("moons", {"n": 200}, ModelSpec(width=8),
                            TrainConfig(steps=60, eval_every=20, checkpoint_every=20))
    return train_job(Quiet(), experiment, store=lab.store(), device="cpu")["run_id"]


def second_run() -> str:
    """Another small run on the same data (another seed), for the compare modes."""
    experiment = Experiment("moons", {"n": 200}, ModelSpec(width=8, seed=1), TrainConfig(steps=40))
    return train_job(Quiet(), experiment, store=lab.store(), device="cpu")["run_id"]


def trace_types(specs) -> set[str]:
    return {trace.get("name") or trace["type"] for spec in specs for trace in spec["data"]}


def poll_until_charts(at, until, timeout: float = 120.0):
    """Rerun the page (as the progress fragment's timer would) until `until(charts)` holds."""
    deadline = time.monotonic() + timeout
    while not until(plotly_specs(at)):
        assert time.monotonic() < deadline, f"charts {trace_types(plotly_specs(at))} after {timeout} s"
        time.sleep(0.3)
        at.run()
        assert not at.exception, at.exception
        assert not at.error, [e.value for e in at.error]
    return plotly_specs(at)


def test_landscape_draws_contour_and_surface_of_a_run(open_page, stored_run):
    at = open_page("landscape")
    poll_until_charts(at, lambda specs: {"contour", "surface"} <= trace_types(specs))


def test_landscape_draws_the_trajectory_plane(open_page, stored_run):
    at = open_page("landscape")
    at.radio(key="ls:plane").set_value("training trajectory (PCA)").run()
    poll_until_charts(at, lambda specs: {"contour", "trajectory"} <= trace_types(specs))


def test_ntk_draws_spectra_eigenfunctions_and_the_kernel_trajectory(open_page, stored_run):
    at = open_page("ntk")
    at.select_slider(key="ntk:samples").set_value(100).run()
    poll_until_charts(at, lambda specs: len(specs) >= 7)


def test_geometry_draws_embedding_cka_rsa_and_curves(open_page, stored_run):
    at = open_page("geometry")
    at.select_slider(key="geo:samples").set_value(200).run()
    poll_until_charts(at, lambda specs: len(specs) >= 4)


def test_levelset_draws_the_map_the_profile_and_the_triangle(open_page, stored_run):
    at = open_page("levelset")
    at.select_slider(key="ls2:steps").set_value(50).run()
    poll_until_charts(at, lambda specs: len(specs) >= 3)


def test_pruning_draws_the_sweep_and_the_last_layer_geometry(open_page, stored_run):
    at = open_page("pruning")
    at.multiselect(key="pr:methods").set_value(["magnitude", "random"]).run()
    at.select_slider(key="pr:finetune").set_value(0).run()
    poll_until_charts(at, lambda specs: len(specs) >= 5)


def test_landscape_compares_two_runs_and_the_path_between_them(open_page, stored_run):
    other = second_run()
    at = open_page("landscape")
    at.toggle(key="ls:compare").set_value(True).run()
    at.multiselect(key="picker:runs").set_value([stored_run, other]).run()
    poll_until_charts(at, lambda specs: len(specs) >= 2 and any("barrier" in str(s["layout"].get("title")) for s in specs))


def test_levelset_compares_two_runs_on_the_same_pairs(open_page, stored_run):
    at = open_page("levelset")
    at.select_slider(key="ls2:steps").set_value(50).run()
    poll_until_charts(at, lambda specs: len(specs) >= 3)
    other = second_run()
    at.toggle(key="lv:compare").set_value(True).run()
    at.selectbox(key="picker:other").set_value(other).run()
    poll_until_charts(at, lambda specs: any("mean confidence" in json.dumps(s["layout"]) for s in specs))


def test_pruning_finds_lottery_tickets(open_page, stored_run):
    at = open_page("pruning")
    at.multiselect(key="pr:methods").set_value(["magnitude"]).run()
    at.select_slider(key="pr:finetune").set_value(0).run()
    poll_until_charts(at, lambda specs: len(specs) >= 5)
    at.select_slider(key="pr:rounds").set_value(2).run()
    at.select_slider(key="pr:steps").set_value(100).run()
    at.toggle(key="pr:lottery").set_value(True).run()
    poll_until_charts(at, lambda specs: len(specs) >= 6)


def test_geometry_compares_two_runs_layer_by_layer_and_unit_by_unit(open_page, stored_run):
    at = open_page("geometry")
    at.select_slider(key="geo:samples").set_value(200).run()
    poll_until_charts(at, lambda specs: len(specs) >= 4)
    other = second_run()
    at.toggle(key="geo:compare").set_value(True).run()
    at.selectbox(key="picker:other").set_value(other).run()
    poll_until_charts(at, lambda specs: len(specs) >= 6)


def test_landscape_curvature_panel_draws_sharpness_density_and_convexity(open_page, stored_run):
    at = open_page("landscape")
    at.select_slider(key="ls:samples").set_value(250).run()
    poll_until_charts(at, lambda specs: {"contour", "surface"} <= trace_types(specs))
    at.toggle(key="ls:hessian").set_value(True).run()
    poll_until_charts(at, lambda specs: len(specs) >= 4)
    at.toggle(key="ls:convexity").set_value(True).run()
    poll_until_charts(at, lambda specs: len(specs) >= 5)
