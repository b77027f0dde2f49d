"""The lazy/rich lesson, step 1, from the click to the pictures.

The page's "Train these runs together" submits the step's three runs (alpha 0.1, 1, 10: circle,
width 128, GD, 400 steps, lazy measures and the linearized twin) as three training jobs of the
server's job runner, and its fragment draws what the jobs have reported. This benchmark does
the same at the engine level (the page's reruns only read the jobs' reports, so they do not
decide when a picture can be drawn): it submits the three jobs as the page does and polls their
reports every 0.05 s, and says

- click -> first picture: every run has reported a prediction view (the first row of pictures);
- click -> measures: every run has reported its lazy measures at a checkpoint after step 0;
- click -> done: every job has ended (all pictures final, the runs saved).

With --profile the jobs run under cProfile (one profiler per job thread) and the split of their
time is printed: training steps, the twin, the kernel measures, CKA / effective rank, the
prediction views, saving.

    python bench/lesson.py [--repeats 3] [--profile] [--threads N]
"""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

POLL_S = 0.05

# function name (as cProfile names it) -> the part of the lesson it belongs to; cumulative
# times, so a part includes what it calls (the parts below do not call one another)
PARTS = {
    "training steps (forward, backward, update)": ("step",),
    "twin (kernel product per step)": ("after_step",),
    "lazy measures at checkpoints": ("at_checkpoint",),
    "  of which the kernel (eNTK trace)": ("kernel",),
    "  of which CKA / effective rank (hidden layer)": ("hidden", "linear_cka", "effective_rank"),
    "twin set-up (kernel at init)": ("__init__",),
    "prediction views": ("prediction_view",),
    "saving (checkpoints, metrics)": ("save_checkpoint", "save_metrics", "save_artifact", "finish"),
}
PART_FILES = {"step": "engine/train.py", "after_step": "engine/probes.py", "at_checkpoint": "engine/probes.py",
              "kernel": "engine/probes.py", "hidden": "engine/probes.py", "linear_cka": "engine/geometry.py",
              "effective_rank": "engine/geometry.py", "__init__": "engine/lazy.py",
              "prediction_view": "engine/views.py", "save_checkpoint": "engine/store.py",
              "save_metrics": "engine/store.py", "save_artifact": "engine/store.py", "finish": "engine/store.py"}


def lesson_runs():
    from engine import presets

    return [(run.name, run.experiment) for run in presets.lesson("lazy-rich")[0].runs]


def profiled(fn, profiles: list):
    """`fn` run under a cProfile of its own thread; the profile is appended to `profiles`."""
    def run(*args, **kwargs):
        profile = cProfile.Profile()
        try:
            return profile.runcall(fn, *args, **kwargs)
        finally:
            profiles.append(profile)
    return run


def one_lesson(manager, store, profile: bool) -> dict:
    """Click -> first picture, measures and done, in seconds, for one training of the step."""
    from engine.experiment import train_job

    profiles: list = []
    job = profiled(train_job, profiles) if profile else train_job
    click = time.perf_counter()
    ids = [manager.submit(job, owner="bench", kind="train", label=name, experiment=experiment, store=store,
                          name=name) for name, experiment in lesson_runs()]
    times: dict = {}
    while "done" not in times:
        states = [manager.get(i, "bench") for i in ids]
        now = time.perf_counter() - click
        if "first picture" not in times and all(s.partial.get("view") is not None for s in states):
            times["first picture"] = now
        if "measures" not in times and all(_measured(s) for s in states):
            times["measures"] = now
        if all(s.done for s in states):
            failed = [s.error for s in states if s.status != "done"]
            if failed:
                raise SystemExit(f"A run failed: {failed}")
            times["done"] = now
        time.sleep(POLL_S)
    times["profiles"] = profiles
    return times


def one_lesson_on_page(home: Path) -> dict:
    """The same through the page in AppTest, as a user clicks: "Train these runs together",
    then reruns (as the fragment's timer would) until the three prediction views are drawn,
    and until the jobs have ended and the page shows the finished pictures. Each rerun's
    own time counts: a slow page delays the pictures as a slow job would."""
    from streamlit.testing.v1 import AppTest

    import app_pages.lab as lab

    root = Path(__file__).resolve().parent.parent
    at = AppTest.from_file(str(root / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("app_pages/lazy.py").run()
    button = next(b for b in at.button if b.label == "Train these runs together")
    click = time.perf_counter()
    button.click().run()
    times, reruns = {}, 0
    while "done" not in times:
        at.run()
        reruns += 1
        if at.exception:
            raise SystemExit(f"The page failed: {at.exception}")
        now = time.perf_counter() - click
        titles = [json.loads(el.proto.spec)["layout"].get("title", {}).get("text") or ""
                  for el in at.get("plotly_chart")]
        if "first picture" not in times and sum(t.startswith("alpha") for t in titles) >= 3:
            times["first picture"] = now
        states = lab.jobs().list(at.session_state["owner"])
        if "measures" not in times and states and all(_measured(s) for s in states):
            times["measures"] = now
        if states and all(s.done for s in states):
            at.run()
            times["done"] = time.perf_counter() - click
        time.sleep(POLL_S)
    times["reruns"] = reruns
    lab.jobs().shutdown()
    return times


def _measured(state) -> bool:
    lazy = state.partial.get("watch", {}).get("lazy")
    return lazy is not None and len(lazy.steps) > 1


def split(profiles: list) -> list[tuple[str, float]]:
    """Seconds of the job threads in each part of the lesson (summed over the threads)."""
    stats = pstats.Stats(profiles[0])
    for p in profiles[1:]:
        stats.add(p)
    cumulative = {}
    for (filename, _, function), (_, _, _, ct, _) in stats.stats.items():
        wanted = PART_FILES.get(function)
        if wanted and filename.endswith(wanted):
            cumulative[function] = cumulative.get(function, 0.0) + ct
    total = sum(ct for (_, _, f), (_, _, _, ct, _) in stats.stats.items() if f == "train_job")
    rows = [("all of train_job (3 threads)", total)]
    rows += [(part, sum(cumulative.get(f, 0.0) for f in functions)) for part, functions in PARTS.items()]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="profile the job threads (slower) and print the split")
    parser.add_argument("--page", action="store_true", help="drive the page in AppTest instead of the job runner")
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                        help="torch threads (the app's default: the cores less one)")
    args = parser.parse_args()
    import torch

    from engine.jobs import JobManager
    from engine.store import RunStore

    torch.set_num_threads(args.threads)
    manager = JobManager(max_workers=4)  # the app's job runner
    print(f"lazy/rich lesson step 1: {', '.join(n for n, _ in lesson_runs())}; torch threads {args.threads}")
    rows = []
    with tempfile.TemporaryDirectory() as home:
        os.environ["DYNAMICS_LAB_HOME"] = home  # the page's store
        store = RunStore(Path(home) / "runs")
        for repeat in range(args.repeats):
            load = os.getloadavg()[0]
            if args.page:
                import streamlit as st

                st.cache_resource.clear()  # a fresh job runner per repeat, as a fresh server
                times = one_lesson_on_page(Path(home))
            else:
                times = one_lesson(manager, store, args.profile)
            rows.append(times)
            print(f"  repeat {repeat + 1}: first picture {times['first picture']:.2f} s, "
                  f"measures {times['measures']:.2f} s, done {times['done']:.2f} s (load {load:.2f})", flush=True)
            if args.page:
                print(f"      page reruns: {times['reruns']}")
            if args.profile and not args.page:
                for part, seconds in split(times["profiles"]):
                    print(f"      {part:48s} {seconds:7.2f} s")
    manager.shutdown()
    for key in ("first picture", "measures", "done"):
        print(f"median click -> {key}: {statistics.median(r[key] for r in rows):.2f} s")
    print(f"load average now: {os.getloadavg()}; threads alive {threading.active_count()}")


if __name__ == "__main__":
    main()
