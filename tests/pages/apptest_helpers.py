"""Helpers for the AppTest page tests: find charts and buttons, drive and poll a training."""
from __future__ import annotations

import json
import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

import app_pages.lab as lab

APP = str(Path(__file__).resolve().parents[2] / "app.py")
PAGES = {"home": "app_pages/home.py", "train": "app_pages/train.py", "runs": "app_pages/runs.py",
         "overview": "app_pages/overview.py",
         "landscape": "app_pages/landscape.py", "ntk": "app_pages/ntk.py", "lazy": "app_pages/lazy.py",
         "geometry": "app_pages/geometry.py", "levelset": "app_pages/levelset.py",
         "pruning": "app_pages/pruning.py"}


def open_link(name: str, query: dict) -> AppTest:
    """A page opened through a link with these query parameters, in a new browser session
    (the pages read a link once, when the session opens)."""
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params.update(query)
    at.run()
    at.switch_page(PAGES[name]).run()
    assert not at.exception, at.exception
    return at


def plotly_specs(at: AppTest) -> list[dict]:
    """The plotly figures on the page (AppTest returns them as unknown elements)."""
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def button(at: AppTest, label: str):
    matches = [b for b in at.button if b.label == label]
    assert len(matches) == 1, f"expected one {label!r} button, found {[b.label for b in at.button]}"
    return matches[0]


def job_state(at: AppTest):
    """This session's training job, as the page's job runner sees it."""
    return lab.jobs().get(at.session_state["job_id"], at.session_state["owner"])


def poll(at: AppTest, until, timeout: float = 90.0, interval: float = 0.2):
    """Rerun the page (as the fragment's timer would) until `until(state)` holds; return the state."""
    deadline = time.monotonic() + timeout
    while True:
        at.run()
        assert not at.exception, at.exception
        state = job_state(at)
        if until(state):
            return state
        assert time.monotonic() < deadline, f"job still {state.status} after {timeout} s: {state.message}"
        time.sleep(interval)


def start_training(at: AppTest, steps: int, eval_every: int = 20, name: str = "") -> None:
    at.selectbox(key="setting:data").set_value("moons")
    at.number_input(key="setting:train.steps").set_value(steps)
    at.number_input(key="setting:train.eval_every").set_value(eval_every)
    if name:
        at.main.text_input[0].set_value(name)  # the run name, the only text input in the main area
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    button(at, "Start").click().run()
    assert not at.exception, at.exception


class Quiet:
    """A job context that ignores reports, for training runs directly in a test."""

    cancelled = False

    def report(self, *args, **kwargs):
        pass


def small_run(seed: int = 0, steps: int = 60, name: str = "") -> str:
    """A small run on moons (8 wide, a checkpoint every 20 steps) in the app's store."""
    from engine.experiment import Experiment, train_job
    from engine.models import ModelSpec
    from engine.train import TrainConfig

    experiment = Experiment("moons", {"n": 200}, ModelSpec(width=8, seed=seed),
                            TrainConfig(steps=steps, eval_every=20, checkpoint_every=20))
    return train_job(Quiet(), experiment, store=lab.store(), name=name, device="cpu")["run_id"]


def second_run(seed: int = 1) -> str:
    """Another small run on the same data (another seed), for the compare modes. Its name
    says its seed: pickers tell runs apart by their labels."""
    return small_run(seed, steps=40, name=f"seed {seed}")
