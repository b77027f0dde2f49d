"""Browser tests: one Streamlit server per session, driven by Debian's chromium via Playwright.

The server runs `app.py` on a free localhost port with its run store in a temporary folder.
Where no chromium is installed the tests are skipped, except on CI (CI=true), where a
missing browser is a failure.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
HEALTH_TIMEOUT_S = 90
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def pytest_collection_modifyitems(items):
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.e2e)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _chromium() -> str:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    message = "The browser tests need Debian's chromium; install it with: apt-get install -y chromium"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@contextlib.contextmanager
def serve(home: Path, log_path: Path):
    """Run `streamlit run app.py` on a free localhost port; yield its base URL; stop its process group."""
    port = _free_port()
    env = dict(os.environ, DYNAMICS_LAB_HOME=str(home), PYTHONUNBUFFERED="1")
    env.setdefault("NUMBA_CACHE_DIR", str(home / "numba-cache"))
    command = [sys.executable, "-m", "streamlit", "run", "app.py",
               "--server.headless=true", "--server.address=127.0.0.1", f"--server.port={port}",
               "--browser.gatherUsageStats=false", "--server.fileWatcherType=none"]
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        try:
            deadline = time.monotonic() + HEALTH_TIMEOUT_S
            while not _healthy(url):
                if server.poll() is not None:
                    pytest.fail(f"streamlit exited with {server.returncode}:\n{log_path.read_text()[-4000:]}")
                if time.monotonic() > deadline:
                    pytest.fail(f"streamlit not healthy after {HEALTH_TIMEOUT_S} s:\n{log_path.read_text()[-4000:]}")
                time.sleep(0.25)
            yield url
        finally:
            _stop(server)
    text = log_path.read_text()
    if "Traceback" in text:
        print("streamlit log:\n" + text[-4000:])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            return response.read().decode().strip() == "ok"
    except OSError:
        return False


def _stop(server: subprocess.Popen) -> None:
    """End the server's whole process group (it was started in a session of its own)."""
    for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            server.wait(timeout=wait_s)  # already gone: reap it
            break
        try:
            server.wait(timeout=wait_s)
            break
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="session")
def app_url(tmp_path_factory):
    """The app, started once for the session with its run store in a temporary folder."""
    with serve(tmp_path_factory.mktemp("dynamics-lab-home"),
               tmp_path_factory.mktemp("server") / "streamlit.log") as url:
        yield url


@pytest.fixture(scope="session")
def lens_app_url(tmp_path_factory):
    """A server whose run store already holds one small finished run, for the lens pages."""
    from engine.__main__ import main as engine_cli

    home = tmp_path_factory.mktemp("lens-home")
    code = engine_cli(["--store", str(home / "runs"), "train", "data=moons", "data.n=200", "model.width=8",
                       "train.steps=60", "train.eval_every=20", "train.checkpoint_every=20",
                       "--device", "cpu", "--name", "lens run"])
    assert code == 0
    with serve(home, tmp_path_factory.mktemp("lens-server") / "streamlit.log") as url:
        yield url


@pytest.fixture
def fresh_app_url(tmp_path):
    """A server of its own that no browser has visited yet (for start-up behaviour)."""
    (tmp_path / "home").mkdir()
    with serve(tmp_path / "home", tmp_path / "streamlit.log") as url:
        yield url


@pytest.fixture(scope="session")
def browser():
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(30_000)
    yield tab
    context.close()
