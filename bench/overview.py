"""Overview benchmark: how much the live overview slows training, and how fast it draws a run.

1. Slowdown. The same training job (MLP 2-64-64-2 on moons, Adam, batch 64, a checkpoint
   every 100 steps) runs in the app's job runner twice per round: alone, and while the Overview
   page follows it (AppTest reruns the whole page every LIVE_POLL_S, as the page's fragment
   timer would, so every panel computes at the newest checkpoint when its refresh allows).
   The figure is the ratio of steps per second, watched / alone, over interleaved rounds, each
   timed by the job's own start and end.
2. Render time. The overview of the finished run, from a fresh session: until every panel
   has drawn, first with nothing cached (every analysis computed) and then again (all cached).

    python bench/overview.py [--steps 3000] [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "pages")]
os.environ["DYNAMICS_LAB_HOME"] = tempfile.mkdtemp(prefix="bench-overview-")

import streamlit as st  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

import app_pages.lab as lab  # noqa: E402
from apptest_helpers import APP, PAGES, plotly_specs  # noqa: E402
from app_pages.overview import LIVE_POLL_S  # noqa: E402
from engine.experiment import Experiment, train_job  # noqa: E402
from engine.models import ModelSpec  # noqa: E402
from engine.train import TrainConfig  # noqa: E402

PANELS_OF_A_2D_CLASSIFIER = 9  # curves, predictions and 7 analyses (see tests/pages/test_overview_page.py)


def experiment(steps: int) -> Experiment:
    return Experiment("moons", {"n": 1000}, ModelSpec(width=64, depth=2),
                      TrainConfig(steps=steps, checkpoint_every=100, eval_every=100))


def overview_app(run_id: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page(PAGES["overview"]).run()
    if run_id is not None:
        at.multiselect(key="overview:runs").set_value([run_id]).run()
    return at


def train(steps: int, watched: bool) -> tuple[float, str]:
    """Steps per second of one training job, with or without the overview following it."""
    at = overview_app() if watched else None
    owner = at.session_state["owner"] if at is not None else "bench"
    job = lab.jobs().submit(train_job, owner=owner, kind="train", label="bench", experiment=experiment(steps),
                            store=lab.store(), device="cpu")
    run_id = None
    while not (state := lab.jobs().get(job, owner)).done:
        run_id = run_id or state.partial.get("run_id")
        if at is not None and run_id and lab.store().checkpoint_steps(run_id):
            at.run()  # the page picks the newest run, this one, and follows its newest checkpoint
        time.sleep(LIVE_POLL_S if at is not None else 0.2)
    assert state.status == "done", (state.status, state.error)
    # the job's own start and end: the polling above must not count
    return steps / (state.finished - state.started), state.result["run_id"]


def render(run_id: str) -> float:
    """Seconds until a fresh overview of a finished run has drawn every panel."""
    started = time.perf_counter()
    at = overview_app(run_id)
    while len(plotly_specs(at)) < PANELS_OF_A_2D_CLASSIFIER:
        time.sleep(0.2)
        at.run()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    st.cache_resource.clear()
    lab.jobs()  # the app's runner (and its thread count) before anything is timed
    train(500, watched=False)  # warm-up: imports and first-call costs stay out of the rounds
    ratios = []
    for r in range(args.rounds):
        alone, _ = train(args.steps, watched=False)
        watched, run_id = train(args.steps, watched=True)
        ratios.append(watched / alone)
        print(f"round {r + 1}: alone {alone:,.0f} steps/s, watched {watched:,.0f} steps/s, "
              f"ratio {watched / alone:.2f}", flush=True)
    print(f"watched / alone: median {statistics.median(ratios):.2f} "
          f"(slowdown {1 - statistics.median(ratios):.0%}; goal at most 25%)")
    _, finished = train(args.steps, watched=False)
    cold = render(finished)
    warm = render(finished)
    print(f"overview of a finished run: {cold:.1f} s computing every panel, {warm:.1f} s with all cached")
    lab.jobs().shutdown(timeout=30)


if __name__ == "__main__":
    main()
