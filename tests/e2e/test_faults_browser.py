"""Faults and concurrency with real processes in a real browser: a server killed (SIGKILL)
while it trains comes back with the run listed as interrupted; two people train at once,
each sees only their own run, and both runs are stored whole."""
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import HEALTH_TIMEOUT_S, ROOT, _free_port, _healthy, _stop
from test_browser import LONG_RUN, open_page, wait_for_progress

pytestmark = pytest.mark.e2e
WAIT_S = 180  # a safety net only: waits end as soon as their state is reached


@contextlib.contextmanager
def server(home: Path, log_path: Path):
    """`streamlit run app.py` on a free port in a session of its own; yields (process, url)."""
    port = _free_port()
    env = dict(os.environ, DYNAMICS_LAB_HOME=str(home), PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless=true",
               "--server.address=127.0.0.1", f"--server.port={port}", "--browser.gatherUsageStats=false",
               "--server.fileWatcherType=none"]
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            wait_until(lambda: _healthy(url) or process.poll() is not None, HEALTH_TIMEOUT_S)
            assert process.poll() is None, log_path.read_text()[-4000:]
            yield process, url
        finally:
            if process.poll() is None:
                _stop(process)


def wait_until(condition, timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, f"still waiting after {timeout} s"
        time.sleep(0.2)
    return found


def runs_in(home: Path) -> list[Path]:
    return sorted(p for p in (home / "runs").glob("2*") if p.is_dir())


def settings_of(run: Path) -> dict:
    return json.loads((run / "settings.json").read_text())


@pytest.fixture
def tab(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


def test_a_server_killed_while_training_restarts_with_the_run_interrupted(tab, tmp_path, artifacts):
    home = tmp_path / "home"
    home.mkdir()
    with server(home, tmp_path / "first.log") as (process, url):
        open_page(tab, url, f"/train?train.steps={LONG_RUN}&train.checkpoint_every=20")
        tab.get_by_role("button", name="Start").click()
        wait_for_progress(tab, r"running · step [1-9]")
        [run] = wait_until(lambda: runs_in(home))
        wait_until(lambda: len(list((run / "checkpoints").glob("step-*.safetensors"))) >= 2)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert settings_of(run)["status"] == "running"  # as the dead server left it

    with server(home, tmp_path / "second.log") as (_, url):
        open_page(tab, url, f"/runs?runs={run.name}")
        tab.wait_for_selector("text=Training was interrupted", timeout=60_000)
        tab.screenshot(path=str(artifacts / "runs-interrupted.png"), full_page=True)
        assert tab.locator("[data-testid='stException']").count() == 0
        assert tab.locator("[data-testid='stPlotlyChart']").count() == 2  # curves + last checkpoint
    assert settings_of(run)["status"] == "interrupted"


def test_two_people_training_at_once_each_see_their_own_run_and_both_are_stored(browser, fresh_app_url, tmp_path):
    widths, steps = (16, 32), (300, 400)
    contexts = [browser.new_context(viewport={"width": 1400, "height": 900}) for _ in widths]
    try:
        tabs = [context.new_page() for context in contexts]
        for tab_, width, n in zip(tabs, widths, steps):
            tab_.set_default_timeout(30_000)
            open_page(tab_, fresh_app_url, f"/train?train.steps={n}&model.width={width}&train.eval_every=50")
        for tab_ in tabs:  # both start before either is likely to end
            tab_.get_by_role("button", name="Start").click()
        for tab_, n in zip(tabs, steps):
            wait_for_progress(tab_, rf"done · step {n:,}", timeout=WAIT_S * 1000)
            tab_.wait_for_url(re.compile(r"[?&]run=\w"))
        seen = {re.search(r"[?&]run=([\w.-]+)", tab_.url).group(1): tab_ for tab_ in tabs}
        assert len(seen) == 2, "each page follows a run of its own"
        for (width, n), tab_ in zip(zip(widths, steps), tabs):
            run_id = re.search(r"[?&]run=([\w.-]+)", tab_.url).group(1)
            stored = settings_of(tmp_path / "home" / "runs" / run_id)
            assert (stored["model"]["width"], stored["train"]["steps"], stored["status"]) == (width, n, "done")
        for run in runs_in(tmp_path / "home"):
            assert (run / "checkpoints" / f"step-{settings_of(run)['train']['steps']:08d}.safetensors").exists()
    finally:
        for context in contexts:
            context.close()
