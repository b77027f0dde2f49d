"""AppTest fixtures: a fresh run store and job runner per test, the app driven through app.py.

The pages run through `app.py` (its `st.navigation`), as in the browser: `st.page_link` on
Home only resolves pages that the navigation has defined. `run_every` never fires in
AppTest, so a running job is polled by calling `at.run()` again (see apptest_helpers.poll).
"""
from __future__ import annotations

import pytest
import streamlit as st
from apptest_helpers import APP, PAGES, small_run
from streamlit.testing.v1 import AppTest

import app_pages.lab as lab


@pytest.fixture
def lab_home(tmp_path, monkeypatch):
    """DYNAMICS_LAB_HOME in a temporary folder, set before the store is made; workers joined after."""
    monkeypatch.setenv("DYNAMICS_LAB_HOME", str(tmp_path))
    st.cache_resource.clear()
    st.cache_data.clear()
    yield tmp_path
    assert lab.jobs().shutdown(timeout=10.0), "a training thread did not stop"
    st.cache_resource.clear()
    st.cache_data.clear()


@pytest.fixture
def open_page(lab_home):
    """open_page("train") -> an AppTest that has run app.py and switched to that page."""
    def open_(name: str) -> AppTest:
        at = AppTest.from_file(APP, default_timeout=60)
        at.run()
        assert not at.exception, at.exception
        at.switch_page(PAGES[name]).run()
        return at
    return open_


@pytest.fixture
def stored_run(lab_home):
    """A small finished run on moons in the test's store."""
    return small_run()
