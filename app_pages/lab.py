"""What the pages share: one run store and one job runner per server, and who is asking.

Who is asking is the browser (`app_pages.owner`): a random secret in its cookie, never in the
URL, so a copied link carries settings and run ids, never the right to stop, delete or change
another browser's job, while a reloaded tab still may stop its own. Browsers never see each
other's jobs, with one read-only exception: a training's run id (which a link may carry) shows
its live progress to anyone (`training_of_run`), and only the browser that started it may stop
it (`is_mine`).
"""
from __future__ import annotations

import os
from typing import Callable, Optional

import streamlit as st

from app_pages.owner import owner
from engine.jobs import JobManager
from engine.status import TRAINING_OUTCOME, WITH_WEIGHTS, Status
from engine.store import RunStore

POLL_S = 0.5  # how often live views refresh
# The NTK spectrum's settings on the NTK page and on the overview's panel: the same run and step
# give one stored spectrum and one fit on both (the fitted ranks depend on the number of points).
NTK_SPECTRUM = {"samples": 300, "kind": "trace"}


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
    from engine.geometry import warm_up_umap_in_background

    warm_up_umap_in_background()  # started by `dynamics-lab`: the first UMAP then takes seconds
    return JobManager(max_workers=4)


# ---------------------------------------------------------------- trainings


@st.cache_resource
def _trainings() -> dict[str, str]:
    """job id -> owner of every training submitted on this server (through `submit_training`),
    so that a run's link finds its live job without carrying the owner's token."""
    return {}


def submit_training(label: str, experiment, name: str = "", dataset=None) -> str:
    """Train `experiment` as a job of this session, saved to the store; returns the job id."""
    from engine.experiment import train_job  # torch-heavy; imported where used

    job_id = jobs().submit(train_job, owner=owner(), kind="train", label=label, experiment=experiment,
                           store=store(), name=name, dataset=dataset)
    _trainings()[job_id] = owner()
    return job_id


def training_of_run(run_id: str):
    """The training job (running or recently ended) that writes the stored run `run_id`,
    whichever session started it: a snapshot to show, never a handle to control. None when
    no job of this server trains it (it finished before the server started, or never ran)."""
    trainings = _trainings()
    for job_id, job_owner in list(trainings.items()):
        state = jobs().get(job_id, job_owner)
        if state is None:  # forgotten by the job runner
            trainings.pop(job_id, None)
        elif run_id and state.partial.get("run_id") == run_id:
            return state
    # This session's trainings submitted straight to the job runner (a script, a test).
    return next((s for s in jobs().list(owner(), kind="train") if run_id and s.partial.get("run_id") == run_id), None)


def is_mine(state) -> bool:
    """Whether this browser started the job (and so may stop it, from any of its tabs)."""
    return state is not None and state.owner == owner()


def outcome(state) -> tuple[str, int | None]:
    """How a job stands, in a word, and at which step: its status, except that a training
    that ended by itself says how (diverged, stopped) and where it ended."""
    result = state.result if isinstance(state.result, dict) else {}
    word = TRAINING_OUTCOME.get(result.get("status"), state.status)
    step = result.get("step", state.partial.get("step"))
    return word, step


def status_text(state, label: str = "") -> str:
    """A job's progress line: "running · step 1,234", "diverged · step 8", "failed: <why>"."""
    word, step = outcome(state)
    head = f"{label}: " if label else ""
    if word == "failed":
        return f"{head}failed" + (f" · step {step:,}" if step is not None else " before training began")
    if step is None:
        return head + (state.message or f"{word}…")
    return f"{head}{word} · step {step:,}"


def error_sentence(exc: Exception) -> str:
    """What a user reads when something fails: the sentence, never a traceback."""
    text = str(exc).strip()
    return text if text else f"Something went wrong ({type(exc).__name__})."


# ---------------------------------------------------------------- picking runs


def finished_runs():
    """Runs that have weights to analyse (interrupted ones too), newest first."""
    return [r for r in store().list() if r.status in WITH_WEIGHTS and store().checkpoint_steps(r.id)]


def run_picker(label: str = "Run", *, key: str = "run", multi: bool = False, max_runs: int = 4):
    """A run (or, with multi, up to `max_runs` runs) chosen from the store; kept in the URL.

    Returns a run id (a list with multi), or None (an empty list) when there is none. A
    link's run that is not among the finished runs is said, and no other run is chosen in
    its place.
    """
    runs = finished_runs()
    if not runs:
        st.info("No finished runs yet: train one on the Train page.")
        return [] if multi else None
    names = {r.id: f"{r.name} · {r.dataset} · {r.steps:,} steps · {r.id[-6:]}" for r in runs}  # names may repeat
    asked = [i for i in st.query_params.get(key, "").split(",") if i]
    wanted = [i for i in asked if i in names]
    if f"picker:{key}" not in st.session_state and len(wanted) < len(asked):
        missing = ", ".join(i for i in asked if i not in names)
        st.warning(f"The link names runs that are not among the finished runs here ({missing}): "
                   "they may be deleted or still training. Choose a run.")
    if multi:
        chosen = st.multiselect(label, list(names), default=wanted[:max_runs], format_func=names.get,
                                max_selections=max_runs, key=f"picker:{key}")
    else:
        index = list(names).index(wanted[0]) if wanted else (None if asked else 0)
        chosen = st.selectbox(label, list(names), index=index, format_func=names.get, key=f"picker:{key}")
    value = ",".join(chosen) if multi else chosen
    if value:
        st.query_params[key] = value
    return chosen


def checkpoint_picker(run_id: str, *, key: str = "step", label: str = "Checkpoint (step)") -> int:
    """A checkpoint of the run (the last by default); kept in the URL. A link's step that the
    run lacks is said beside the picker, which then starts at the last checkpoint."""
    steps = store().checkpoint_steps(run_id)
    wanted = st.query_params.get(key, "")
    known = wanted.isdigit() and int(wanted) in steps
    initial = int(wanted) if known else steps[-1]
    if wanted and not known and f"picker:{key}:{run_id}" not in st.session_state:
        st.warning(f"This run has no checkpoint at step '{wanted}' (the link's); showing step {steps[-1]:,}, "
                   f"its last.")
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


def analysis_result(lens: str, run_id: str, settings: dict, recipe, *, label: str = "",
                    cells: Optional[list[str]] = None, cells_title: str = "Cells"):
    """The result of an analysis of a run: from the store if computed before, else as a job.

    While the job runs this draws a progress bar that polls (only this fragment reruns) and
    returns None; when it ends the page reruns and the result comes back. A failure shows
    its sentence. `recipe(ctx, store, run_id, **settings)` is one of `engine.recipes`. An
    analysis that runs as a sweep (`engine.sweep`) names its `cells` (labels, in the sweep's
    order): the bar then says where each stands.
    """
    from engine import analysis  # torch-heavy; imported where used

    stored = analysis.load(store(), run_id, lens, settings, recipe)
    if stored is not None:
        return stored
    job_key = f"analysis:{analysis.artifact_key(lens, settings, recipe)}:{run_id}"
    job_id = st.session_state.get(job_key)
    state = jobs().get(job_id, owner()) if job_id else None
    if state is None:
        job_id = jobs().submit(analysis.cached, owner=owner(), kind=lens, label=label or lens,
                               store=store(), run_id=run_id, lens=lens, settings=settings, recipe=recipe)
        st.session_state[job_key] = job_id
        state = jobs().get(job_id, owner())
    if state.status == Status.DONE:
        return state.result
    if state.status in (Status.FAILED, Status.CANCELLED):
        if state.status == Status.FAILED:
            st.error(state.error or "The computation failed.")
        elif cells:
            st.info("Cancelled. The cells that had finished are kept: compute again to resume.")
        if st.button("Compute again", key=f"again:{job_key}"):
            del st.session_state[job_key]
            st.rerun()
        return None
    st.fragment(run_every=POLL_S)(job_progress)(job_id, cells, cells_title)
    return None


CELL_STATES = {"pending": "to do", "done": "done", "diverged": "diverged", "failed": "failed",
               "cancelled": "cancelled"}


def job_progress(job_id: str, cells: Optional[list[str]] = None, cells_title: str = "Cells") -> None:
    """A job's progress bar with a Cancel button; reruns the whole page when the job ends.
    Drawn as a polling fragment: `st.fragment(run_every=POLL_S)(job_progress)(job_id)`. For a
    sweep's job, `cells` labels its cells (in order), and a caption says where each stands:
    "Widths: 16 done (found) · 64 to do"."""
    state = jobs().get(job_id, owner())
    if state is None:
        return
    if state.done:
        st.rerun()  # the whole page, which now finds the result
    left, right = st.columns([5, 1])
    left.progress(min(max(state.progress, 0.0), 1.0), text=state.message or f"{state.label}…")
    if right.button("Cancel", key=f"cancel:{job_id}"):
        jobs().cancel(job_id, owner())
    reported = state.partial.get("cells")
    if cells and reported and len(reported) == len(cells):
        st.caption(f"{cells_title}: " + " · ".join(
            f"{label} {CELL_STATES.get(cell['status'], cell['status'])}"
            + (" (found)" if cell["status"] == "done" and not cell["trained"] else "")
            for label, cell in zip(cells, reported)))


# ---------------------------------------------------------------- live views


def steady(key: str):
    """A container (keyed `key`) whose elements keep their look while a rerun redraws them.

    Streamlit marks every element of a rerunning script or fragment stale until the rerun has
    drawn it again, and fades it from half a second on. A live view reruns every few seconds
    or faster; when a rerun and the browser's drawing take longer than half a second (under
    load, or beside a training), pictures that had not changed faded out and back on every
    poll. Inside this container stale elements are drawn as they are.
    """
    st.html(f"<style>.st-key-{key} [data-stale='true'] {{opacity: 1 !important; transition: none !important;}}</style>")
    return st.container(key=key)


def kept_figure(slot: str, version, build: Callable):
    """The figure of `slot` at `version`, built by `build()` only when the version changes.

    A live view reruns every half second, while what it draws changes about once a second
    (the job's view reports), and building a figure takes tens of milliseconds of the GIL that
    a training in the same process needs. One figure per slot is kept, in the session.
    """
    kept = st.session_state.setdefault("lab:kept-figures", {})
    if slot not in kept or kept[slot][0] != version:
        kept[slot] = (version, build())
    return kept[slot][1]


def history_version(history) -> tuple[int, int]:
    """What changes when a history grows: the number of steps and of evaluations it holds."""
    return len(history.step), len(history.eval_step)


# ---------------------------------------------------------------- export


def chart(figure, key: str, *, result=None, name: str = "", container=None, select: tuple = ()):
    """A plotly chart with, when a result is given, downloads of its numbers and the figure.

    The files are made only when a download is clicked (deferred data), so an export costs
    nothing on the page's reruns.

    Args:
        select: selection modes ("points", "box", "lasso") that rerun the page with the
            user's selection, which is returned (and kept in st.session_state[key]).
    """
    from engine import results, tables

    place = container if container is not None else st
    options = {"on_select": "rerun", "selection_mode": select} if select else {}
    event = place.plotly_chart(figure, key=key, width="stretch", **options)
    if result is None:
        return event
    name = name or key
    with place.popover("Export", icon=":material/download:"):
        st.download_button("Numbers (.npz)", data=lambda: results.to_npz_bytes(result),
                           file_name=f"{name}.npz", mime="application/octet-stream", key=f"{key}:npz")
        if tables.to_csv(result) is not None:
            st.download_button("Table (.csv)", data=lambda: tables.to_csv(result), file_name=f"{name}.csv",
                               mime="text/csv", key=f"{key}:csv")
        st.download_button("Figure (interactive .html)",
                           data=lambda: figure.to_html(include_plotlyjs=True, full_html=True),
                           file_name=f"{name}.html", mime="text/html", key=f"{key}:html")
    return event
