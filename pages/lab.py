"""What the pages share: one run store and one job runner per server, and who is asking.

A browser session is identified by a random token kept in the URL (`?session=...`), so a
reload finds its running jobs again; sessions never see each other's jobs.
"""
from __future__ import annotations

import secrets

import streamlit as st

from engine.jobs import JobManager
from engine.store import RunStore

POLL_S = 0.5  # how often live views refresh


@st.cache_resource
def store() -> RunStore:
    """The run store (its folder is $DYNAMICS_LAB_HOME/runs, by default under the home folder)."""
    return RunStore()


@st.cache_resource
def jobs() -> JobManager:
    """The server's job runner: jobs run in worker threads, outside the script runs."""
    return JobManager(max_workers=4)


def owner() -> str:
    """This browser session's token (created on first use, kept in the URL)."""
    if "owner" not in st.session_state:
        token = st.query_params.get("session", "")
        valid = len(token) == 16 and all(c in "0123456789abcdef" for c in token)
        st.session_state.owner = token if valid else secrets.token_hex(8)
    st.query_params["session"] = st.session_state.owner
    return st.session_state.owner


def error_sentence(exc: Exception) -> str:
    """What a user reads when something fails: the sentence, never a traceback."""
    text = str(exc).strip()
    return text if text else f"Something went wrong ({type(exc).__name__})."
