"""What keeps live views cheap for a training in the same process: no full garbage collection
after every rerun, and a figure built again only when what it shows changes. (That a `steady`
container keeps its elements from fading is checked in a real browser: tests/e2e/test_browser.py
and tests/e2e/test_overview_live.py.)"""
import subprocess
import sys
from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]


def test_the_app_s_streamlit_runs_no_full_collection_after_each_rerun_and_listens_on_localhost():
    """As `streamlit run app.py` reads its settings: from .streamlit/config.toml in the app's folder."""
    read = "from streamlit import config; print(config.get_option('runner.postScriptGC'), config.get_option('server.address'))"
    shown = subprocess.run([sys.executable, "-c", read], cwd=ROOT, capture_output=True, text=True, check=True)
    assert shown.stdout.split() == ["False", "localhost"]


def kept_figure_script():
    import streamlit as st

    from app_pages.lab import kept_figure

    builds = st.session_state.setdefault("builds", [])
    version = st.session_state.get("version", 0)
    st.session_state["shown"] = kept_figure("slot", version, lambda: builds.append(version) or f"figure {version}")


def test_a_kept_figure_is_built_once_per_version_and_rerun_as_it_is():
    at = AppTest.from_function(kept_figure_script)
    at.run()
    at.run()
    at.session_state["version"] = 1
    at.run()
    at.run()
    assert at.session_state["builds"] == [0, 1] and at.session_state["shown"] == "figure 1"
