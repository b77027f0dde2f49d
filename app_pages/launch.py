"""`dynamics-lab`: start the app (installed by `pip install .` as a command).

    dynamics-lab [--server.port 8502] [any other `streamlit run` option]

It runs `streamlit run app.py` with the lab's safe defaults (listen on localhost only, no
usage statistics, no file watcher); options given on the command line come after them, so
they win.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys

SAFE_DEFAULTS = ["--server.address=localhost", "--server.headless=true",
                 "--browser.gatherUsageStats=false", "--server.fileWatcherType=none"]


def command(argv: list[str]) -> list[str]:
    """The `streamlit run` command line for the app's entry script and these options."""
    return [sys.executable, "-m", "streamlit", "run", entry_script(), *SAFE_DEFAULTS, *argv]


def entry_script() -> str:
    """app.py: in the repository, or beside the installed packages (found, not imported:
    importing it would run the app)."""
    spec = importlib.util.find_spec("app")
    if spec is None or spec.origin is None:
        raise SystemExit("The app's entry script app.py is not installed; reinstall with `pip install .`.")
    return spec.origin


def main(argv: list[str] | None = None) -> int:
    try:
        return subprocess.call(command(sys.argv[1:] if argv is None else argv))
    except KeyboardInterrupt:
        return 130
