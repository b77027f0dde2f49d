"""The overview page in AppTest: every panel of a stored run, a live run followed, two runs."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from apptest_helpers import plotly_specs, second_run

import app_pages.lab as lab
from engine.experiment import Experiment, train_job
from engine.models import ModelSpec
from engine.train import TrainConfig

ROOT = Path(__file__).resolve().parents[2]


def rerun_until(at, until, timeout: float = 180.0):
    """Rerun the page, as its timers would, until `until(at)` holds."""
    deadline = time.monotonic() + timeout
    while not until(at):
        assert time.monotonic() < deadline, f"{len(plotly_specs(at))} charts after {timeout} s"
        time.sleep(0.5)
        at.run()
        assert not at.exception, at.exception
    return at


def panel_titles(at) -> set[str]:
    return {m.value.strip("*") for m in at.markdown if m.value.startswith("**")}


def test_every_panel_of_a_finished_classifier_draws(open_page, stored_run):
    at = open_page("overview")
    assert {"Training", "NTK spectrum", "Loss around the weights", "A level-set walk",
            "Magnitude pruning (final weights)"} <= panel_titles(at), panel_titles(at)
    # training curves, predictions and the eight analysis panels of a 2-D classifier but one
    # (the extreme samples are for images and signals)
    rerun_until(at, lambda at: len(plotly_specs(at)) >= 9)
    links = [el.proto.page for el in at.get("page_link")]
    assert any(link.endswith("landscape.py") or link.endswith("landscape") for link in links), links


def test_two_runs_side_by_side(open_page, stored_run):
    other = second_run()
    at = open_page("overview")
    at.multiselect(key="overview:runs").set_value([stored_run, other]).run()
    rerun_until(at, lambda at: len(plotly_specs(at)) >= 18)
    assert len(at.get("select_slider")) == 2  # a checkpoint slider per run


def test_a_training_run_is_followed_at_its_newest_checkpoint(open_page, lab_home):
    experiment = Experiment("moons", {"n": 200}, ModelSpec(width=8),
                            TrainConfig(steps=10_000_000, checkpoint_every=500, eval_every=500))
    at = open_page("overview")
    job = lab.jobs().submit(train_job, owner=at.session_state["owner"], kind="train", label="live",
                            experiment=experiment, store=lab.store(), device="cpu")
    while not lab.store().list() or len(lab.store().checkpoint_steps(lab.store().list()[0].id)) < 2:
        time.sleep(0.2)
    at.run()
    assert any("training" in c.value for c in at.caption), [c.value for c in at.caption]
    rerun_until(at, lambda at: len(plotly_specs(at)) >= 4)
    lab.jobs().cancel(job, at.session_state["owner"])


def test_the_curves_of_a_run_another_session_trains_are_live(open_page, lab_home):
    experiment = Experiment("moons", {"n": 200}, ModelSpec(width=8),
                            TrainConfig(steps=10_000_000, checkpoint_every=500, eval_every=500))
    at = open_page("overview")
    job = lab.jobs().submit(train_job, owner="another browser", kind="train", label="theirs",
                            experiment=experiment, store=lab.store(), device="cpu")
    try:
        while not lab.store().list() or not lab.store().metrics(lab.store().list()[0].id).get("step"):
            time.sleep(0.2)  # their training has saved some history
        while not lab.store().checkpoint_steps(lab.store().list()[0].id):
            time.sleep(0.2)
        at.run()
        assert lab.training_of_run(lab.store().list()[0].id) is None, "this session must not see their job"
        rerun_until(at, lambda at: any("minibatch loss" in str(spec) for spec in plotly_specs(at)))
        assert not any("appear" in c.value for c in at.caption)
    finally:
        lab.jobs().cancel(job, "another browser")



def test_the_overview_imports_no_other_page(tmp_path):
    """Importing a page module runs that page: the NTK page, imported for its defaults, drew
    itself above the first overview of every server."""
    code = ("import sys, app_pages.overview; "
            "print(sorted(m for m in sys.modules if m.startswith('app_pages.')))")
    env = dict(os.environ, DYNAMICS_LAB_HOME=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "['app_pages.lab', 'app_pages.overview', 'app_pages.owner']"
