"""What the pages share: one run store and one job runner per server, and who is asking.

A browser session is identified by a random token kept in the URL (`?session=...`), so a
reload finds its running jobs again; sessions never see each other's jobs.
"""
from __future__ import annotations

import os
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
    import torch

    # Leave a core to the server and the browser: on a small machine torch's worker threads
    # otherwise fight them for the CPU, and training slows to a crawl while a page watches.
    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
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


# ---------------------------------------------------------------- picking runs


def finished_runs():
    """Runs that have weights to analyse, newest first."""
    return [r for r in store().list() if r.status != "running" and store().checkpoint_steps(r.id)]


def run_picker(label: str = "Run", *, key: str = "run", multi: bool = False, max_runs: int = 4):
    """A run (or, with multi, up to `max_runs` runs) chosen from the store; kept in the URL.

    Returns a run id (a list with multi), or None (an empty list) when there is none.
    """
    runs = finished_runs()
    if not runs:
        st.info("No finished runs yet: train one on the Train page.")
        return [] if multi else None
    names = {r.id: f"{r.name} · {r.dataset} · {r.steps:,} steps · {r.id[-6:]}" for r in runs}  # names may repeat
    wanted = [i for i in st.query_params.get(key, "").split(",") if i in names]
    if multi:
        chosen = st.multiselect(label, list(names), default=wanted[:max_runs], format_func=names.get,
                                max_selections=max_runs, key=f"picker:{key}")
    else:
        index = list(names).index(wanted[0]) if wanted else 0
        chosen = st.selectbox(label, list(names), index=index, format_func=names.get, key=f"picker:{key}")
    value = ",".join(chosen) if multi else chosen
    if value:
        st.query_params[key] = value
    return chosen


def checkpoint_picker(run_id: str, *, key: str = "step", label: str = "Checkpoint (step)") -> int:
    """A checkpoint of the run (the last by default); kept in the URL."""
    steps = store().checkpoint_steps(run_id)
    wanted = st.query_params.get(key, "")
    initial = int(wanted) if wanted.isdigit() and int(wanted) in steps else steps[-1]
    if len(steps) == 1:
        step = steps[0]
    else:
        step = st.select_slider(label, steps, value=initial, key=f"picker:{key}:{run_id}")
    st.query_params[key] = str(step)
    return step


@st.cache_data(max_entries=64, show_spinner=False)
def prediction_at(run_id: str, step: int):
    """What a stored run predicts at a checkpoint (`engine.views.prediction_view`), cached:
    the weights of a run's checkpoint never change."""
    from engine.experiment import load_dataset, load_model
    from engine.views import prediction_view

    return prediction_view(load_model(store(), run_id, step), load_dataset(store(), run_id))


# ---------------------------------------------------------------- analyses as jobs


def analysis_result(lens: str, run_id: str, settings: dict, recipe, *, label: str = ""):
    """The result of an analysis of a run: from the store if computed before, else as a job.

    While the job runs this draws a progress bar that polls (only this fragment reruns) and
    returns None; when it ends the page reruns and the result comes back. A failure shows
    its sentence. `recipe(ctx, store, run_id, **settings)` is one of `engine.recipes`.
    """
    from engine import analysis  # torch-heavy; imported where used

    stored = analysis.load(store(), run_id, lens, settings)
    if stored is not None:
        return stored
    job_key = f"analysis:{analysis.artifact_key(lens, settings)}:{run_id}"
    job_id = st.session_state.get(job_key)
    state = jobs().get(job_id, owner()) if job_id else None
    if state is None:
        job_id = jobs().submit(analysis.cached, owner=owner(), kind=lens, label=label or lens,
                               store=store(), run_id=run_id, lens=lens, settings=settings, recipe=recipe)
        st.session_state[job_key] = job_id
        state = jobs().get(job_id, owner())
    if state.status == "done":
        return state.result
    if state.status in ("failed", "cancelled"):
        if state.status == "failed":
            st.error(state.error or "The computation failed.")
        if st.button("Compute again", key=f"again:{job_key}"):
            del st.session_state[job_key]
            st.rerun()
        return None
    st.fragment(run_every=POLL_S)(job_progress)(job_id)
    return None


def job_progress(job_id: str) -> None:
    """A job's progress bar with a Cancel button; reruns the whole page when the job ends.
    Drawn as a polling fragment: `st.fragment(run_every=POLL_S)(job_progress)(job_id)`."""
    state = jobs().get(job_id, owner())
    if state is None:
        return
    if state.done:
        st.rerun()  # the whole page, which now finds the result
    left, right = st.columns([5, 1])
    left.progress(min(max(state.progress, 0.0), 1.0), text=state.message or f"{state.label}…")
    if right.button("Cancel", key=f"cancel:{job_id}"):
        jobs().cancel(job_id, owner())


# ---------------------------------------------------------------- export


def chart(figure, key: str, *, result=None, name: str = "", container=None, select: tuple = ()):
    """A plotly chart with, when a result is given, downloads of its numbers and the figure.

    The files are made only when a download is clicked (deferred data), so an export costs
    nothing on the page's reruns.

    Args:
        select: selection modes ("points", "box", "lasso") that rerun the page with the
            user's selection, which is returned (and kept in st.session_state[key]).
    """
    from engine import results

    place = container if container is not None else st
    options = {"on_select": "rerun", "selection_mode": select} if select else {}
    event = place.plotly_chart(figure, key=key, width="stretch", **options)
    if result is None:
        return event
    name = name or key
    with place.popover("Export", icon=":material/download:"):
        st.download_button("Numbers (.npz)", data=lambda: results.to_npz_bytes(result),
                           file_name=f"{name}.npz", mime="application/octet-stream", key=f"{key}:npz")
        if results.to_csv(result) is not None:
            st.download_button("Table (.csv)", data=lambda: results.to_csv(result), file_name=f"{name}.csv",
                               mime="text/csv", key=f"{key}:csv")
        st.download_button("Figure (interactive .html)",
                           data=lambda: figure.to_html(include_plotlyjs=True, full_html=True),
                           file_name=f"{name}.html", mime="text/html", key=f"{key}:html")
    return event
