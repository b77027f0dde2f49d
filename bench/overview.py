"""Overview benchmark: how much the live overview slows training, and how fast it draws a run.

1. Slowdown. The same training job (MLP 2-64-64-2 on moons, Adam, batch 64, a checkpoint
   every 100 steps) runs in the app's job runner twice per round: alone, and while the Overview
   page follows it (AppTest reruns the whole page every LIVE_POLL_S, as the page's fragment
   timer would, so every panel computes at the newest checkpoint when its refresh allows).
   The figure is the ratio of steps per second, watched / alone, over interleaved rounds, each
   timed by the job's own start and end.
2. Render time. The overview of the finished run, from a fresh session: until every panel
   has drawn, first with nothing cached (every analysis computed) and then again (all cached).

3. In a real browser (--browser): a streamlit server of its own, Debian's chromium (Playwright).
   One endless run is started on the Train page (as a user would, in the server's job runner);
   then, in interleaved windows of --window seconds, the tab is away from the lab (about:blank)
   or on the Overview following that run (--page train: the Train page's live view of it,
   which reruns every half second). Steps per second in a window come from the run's
   checkpoint files (their steps and times), so the same process and the same run give both
   figures; the ratio is watched / away. The page's own state is sampled too: how many panels
   drew, which checkpoints it followed (live when the first and last differ), the share of
   samples in which an element waited for a rerun to redraw it (marked stale), and the share
   in which one was seen greyed (its computed opacity below 0.9).
   Each window also prints where the CPU went (CPU seconds per second, from /proc): the
   server's training thread, its other threads, chromium, and the rest of the machine.

    python bench/overview.py [--steps 3000] [--rounds 3]
    python bench/overview.py --browser [--rounds 3] [--window 30] [--page overview|train]
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
from apptest_helpers import APP, PAGES, plotly_specs  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

import app_pages.lab as lab  # noqa: E402
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


# ---------------------------------------------------------------- in a real browser

TRAIN_LINK = ("/train?data=moons&data.n=1000&model.width=64&model.depth=2&train.optimizer=adam"
              "&train.steps=10000000&train.checkpoint_every=100&train.eval_every=100")
# Streamlit marks an element stale (data-stale) from the start of a rerun until the rerun draws
# it again, and fades it (opacity 0.33, from 0.5 s on, over 1 s) while it stays stale: an element
# is seen greyed when its opacity is below 0.9 (and it takes up room: an empty placeholder,
# which cannot be seen, may stay stale).
STALE_PROBE = """() => {
    const stale = document.querySelectorAll("[data-stale='true']").length;
    const grey = [...document.querySelectorAll("[data-testid='stElementContainer']")]
        .filter(el => el.offsetHeight > 0 && parseFloat(getComputedStyle(el).opacity) < 0.9).length;
    const charts = document.querySelectorAll("[data-testid='stPlotlyChart']").length;
    const caption = [...document.querySelectorAll("[data-testid='stCaptionContainer']")]
        .map(el => el.innerText).find(text => text.includes("· training")) || "";
    const step = caption.match(/step ([\\d,]+)/);
    return {stale, grey, charts, step: step ? parseInt(step[1].replaceAll(",", "")) : null};
}"""


def checkpoint_times(home: Path) -> list[tuple[int, float]]:
    """(step, file time) of the newest run's checkpoints in the server's store."""
    from engine.store import RunStore, _checkpoint_name

    store = RunStore(home / "runs")
    runs = store.list()
    if not runs:
        return []
    folder = home / "runs" / runs[0].id / "checkpoints"
    found = []
    for step in store.checkpoint_steps(runs[0].id):
        path = folder / _checkpoint_name(step)
        if path.exists():
            found.append((step, path.stat().st_mtime))
    return found


def rate_between(home: Path, start: float, end: float) -> float:
    """Steps per second of the checkpoints written between two times."""
    inside = [(s, t) for s, t in checkpoint_times(home) if start <= t <= end]
    if len(inside) < 2:
        return float("nan")
    (s0, t0), (s1, t1) = inside[0], inside[-1]
    return (s1 - s0) / (t1 - t0)


def watch(page, seconds: float) -> dict:
    """Sample the page every 0.1 s for `seconds`: the most charts drawn, the share of samples in
    which some element was stale (marked; not yet visible), the share in which some element was
    seen greyed, and the checkpoints the followed run's caption named (first and last: the
    columns are live when they differ)."""
    samples, stale, greyed, charts, steps = 0, 0, 0, 0, []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        seen = page.evaluate(STALE_PROBE)
        samples, stale, greyed = samples + 1, stale + (seen["stale"] > 0), greyed + (seen["grey"] > 0)
        charts = max(charts, seen["charts"])
        steps += [seen["step"]] if seen["step"] is not None else []
        page.wait_for_timeout(100)
    return {"charts": charts, "stale": round(stale / max(samples, 1), 3), "greyed": round(greyed / max(samples, 1), 3),
            "steps": f"{steps[0]:,}->{steps[-1]:,}" if steps else "none", "samples": samples}


TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def cpu_of(stat_path: str) -> float:
    """CPU seconds (user + system) of a process or thread, from its /proc stat file; 0 once gone."""
    try:
        fields = Path(stat_path).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) * TICK_S  # utime, stime (fields 14, 15 of stat)


def descendants() -> dict[int, str]:
    """This process's descendants (the streamlit server, Playwright's driver, chromium): pid -> command."""
    parents, commands = {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                commands[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
    ours, grew = {os.getpid()}, True
    while grew:
        found = {pid for pid, parent in parents.items() if parent in ours} - ours
        ours, grew = ours | found, bool(found)
    return {pid: commands[pid] for pid in ours - {os.getpid()}}


class CpuSplit:
    """Where the CPU went in a window: the training thread of the server, the server's other
    threads (the page's reruns, the panels' jobs, the websocket), chromium, and the rest of the
    machine. Counted from /proc at the window's start and end, in CPU seconds per second."""

    def __init__(self, server: int, training_tid: int):
        self.server = server
        self.training = f"/proc/{server}/task/{training_tid}/stat"

    def sample(self) -> dict[str, float]:
        chromium = [pid for pid, command in descendants().items() if "chromium" in command]
        cores = [int(x) * TICK_S for x in Path("/proc/stat").read_text().split()[1:8]]  # all cores
        busy = sum(cores) - cores[3] - cores[4]  # less idle and iowait
        return {"time": time.time(), "training": cpu_of(self.training),
                "server": cpu_of(f"/proc/{self.server}/stat"),
                "chromium": sum(cpu_of(f"/proc/{pid}/stat") for pid in chromium), "busy": busy}

    @staticmethod
    def between(start: dict, end: dict) -> dict[str, float]:
        rate = {k: (end[k] - start[k]) / (end["time"] - start["time"]) for k in start if k != "time"}
        rate["server other"] = rate.pop("server") - rate["training"]
        rate["machine rest"] = rate.pop("busy") - rate["training"] - rate["server other"] - rate["chromium"]
        return {k: round(v, 2) for k, v in rate.items()}


def training_thread(server: int, seconds: float = 3.0) -> int:
    """The server's thread that used the most CPU over a few seconds while only the run works."""
    tasks = lambda: {int(t.name): cpu_of(str(t / "stat")) for t in Path(f"/proc/{server}/task").iterdir()}  # noqa: E731
    before = tasks()
    time.sleep(seconds)
    after = tasks()
    return max(after, key=lambda tid: after[tid] - before.get(tid, 0.0))


# The pages the browser benchmark can open on the followed run: the overview, or the Train
# page's live view of it (a link to a run shows it read-only, polling every POLL_S).
WATCHED_PAGES = {"overview": "/overview?run={run_id}", "train": "/train?run={run_id}"}


def browser_main(rounds: int, window: float, watched: str = "overview") -> None:
    from playwright.sync_api import sync_playwright

    sys.path.insert(0, str(ROOT / "tests" / "e2e"))
    from conftest import CHROMIUM_ARGS, serve

    home = Path(tempfile.mkdtemp(prefix="bench-overview-browser-"))
    with serve(home, home / "streamlit.log") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 2400})
        page.goto(url + TRAIN_LINK)
        page.get_by_role("button", name="Start").click()
        while len(checkpoint_times(home)) < 3:
            time.sleep(0.5)
        from engine.store import RunStore

        run_id = RunStore(home / "runs").list()[0].id
        page.goto("about:blank")
        server = next(pid for pid, command in descendants().items() if "streamlit run" in command)
        split = CpuSplit(server, training_thread(server))
        ratios = []
        for r in range(rounds):
            rates = {}
            for where in ("away", watched):
                load = os.getloadavg()[0]
                if where == "away":
                    page.goto("about:blank")
                    start, cpu = time.time(), split.sample()
                    time.sleep(window)
                    seen = {}
                else:
                    page.goto(url + WATCHED_PAGES[watched].format(run_id=run_id))
                    start, cpu = time.time(), split.sample()
                    seen = watch(page, window)
                rates[where] = rate_between(home, start + 2, time.time())  # the page's start-up left out
                print(f"round {r + 1} {where:8s}: {rates[where]:7.0f} steps/s (load {load:.2f}) {seen}\n"
                      f"    CPU s/s {CpuSplit.between(cpu, split.sample())}", flush=True)
            ratios.append(rates[watched] / rates["away"])
            print(f"round {r + 1}: {watched} / away {ratios[-1]:.2f}", flush=True)
        print(f"{watched} open / away: median {statistics.median(ratios):.2f} "
              f"(slowdown {1 - statistics.median(ratios):.0%}; goal at most 25%); load {os.getloadavg()}")
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--browser", action="store_true", help="the page open in chromium (see 3. above)")
    parser.add_argument("--window", type=float, default=30.0, help="seconds per window with --browser")
    parser.add_argument("--page", choices=sorted(WATCHED_PAGES), default="overview",
                        help="with --browser: the page open on the run in its windows")
    args = parser.parse_args()
    if args.browser:
        return browser_main(args.rounds, args.window, args.page)
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
