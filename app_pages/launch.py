"""`dynamics-lab`: start the app (installed by `pip install .` as a command).

    dynamics-lab [--models FILE.py:factory,...] [--server.port 8502] [any other `streamlit run` option]

It runs `streamlit run app.py` with the lab's safe defaults (listen on localhost only, no
usage statistics, no file watcher); options given on the command line come after them, so
they win. `--models` names the model factories the Runs page may import models with (the
same as $DYNAMICS_LAB_MODELS): model code is never uploaded through the browser.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys

MODELS_VAR = "DYNAMICS_LAB_MODELS"  # as engine.external reads it (imported there with torch: not here)
WARM_UP_VAR = "DYNAMICS_LAB_WARM_UP_UMAP"  # as engine.geometry reads it: the server warms UMAP up
SAFE_DEFAULTS = ["--server.address=localhost", "--server.headless=true",
                 "--browser.gatherUsageStats=false", "--server.fileWatcherType=none"]


def command(argv: list[str]) -> list[str]:
    """The `streamlit run` command line for the app's entry script and these options."""
    return [sys.executable, "-m", "streamlit", "run", entry_script(), *SAFE_DEFAULTS, *argv]


def environment(models: str | None, base: dict | None = None) -> dict:
    """The server's environment: `base` (this process' by default), with the offered factories."""
    env = dict(os.environ if base is None else base)
    if models:
        env[MODELS_VAR] = models
    return env


def entry_script() -> str:
    """app.py: in the repository, or beside the installed packages (found, not imported:
    importing it would run the app)."""
    spec = importlib.util.find_spec("app")
    if spec is None or spec.origin is None:
        raise SystemExit("The app's entry script app.py is not installed; reinstall with `pip install .`.")
    return spec.origin


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dynamics-lab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", help="FILE.py:factory,... the Runs page offers for importing a model")
    ours, streamlit_options = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    try:
        return subprocess.call(command(streamlit_options), env={WARM_UP_VAR: "1"} | environment(ours.models))
    except KeyboardInterrupt:
        return 130
