"""Time from `streamlit run app.py` to the first rendered page, in a real browser.

Starts the server on a free localhost port, then measures (a) until the health check
answers and (b) until Chromium shows the Home page with its script finished; then the same
for the Train page (which imports torch on its first run). Needs Debian's chromium.

    python bench/startup.py [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok":
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError("the server did not answer its health check")


def wait_rendered(page) -> None:
    page.wait_for_selector("[data-testid='stApp']", timeout=120_000)
    page.wait_for_selector("[data-test-script-state='notRunning']", timeout=120_000)
    page.wait_for_selector("[data-testid='stMainBlockContainer'] h1", timeout=120_000)


def one_round(browser) -> dict[str, float]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = os.environ | {"DYNAMICS_LAB_HOME": tempfile.mkdtemp(prefix="dl-bench-")}
    start = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless=true",
         "--server.address=127.0.0.1", f"--server.port={port}", "--browser.gatherUsageStats=false",
         "--server.fileWatcherType=none"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_healthy(url)
        healthy = time.perf_counter() - start
        page = browser.new_page()
        page.goto(url)
        wait_rendered(page)
        home = time.perf_counter() - start
        t = time.perf_counter()
        page.goto(f"{url}/train")
        wait_rendered(page)
        train = time.perf_counter() - t
        page.close()
        return {"health": healthy, "home": home, "train": train}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        rounds = [one_round(browser) for _ in range(args.rounds)]
        browser.close()
    for key, label in (("health", "server answers health check"), ("home", "Home page rendered"),
                       ("train", "then Train page rendered (first torch import)")):
        values = [r[key] for r in rounds]
        print(f"{label:48s} median {statistics.median(values):5.2f} s  (all: {', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()
