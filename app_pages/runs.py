"""Runs: open, compare, rename, delete, download and import saved runs."""
from __future__ import annotations

import time
from urllib.parse import urlencode

import streamlit as st

from app_pages.importing import import_model_panel
from app_pages.lab import error_sentence, prediction_at, store
from engine import external
from engine.experiment import Experiment
from engine.results import History
from engine.status import WITH_WEIGHTS, Status
from viz.predictions import prediction_figure
from viz.training import compare_curves, training_curves

MAX_COMPARED = 4
METRICS = {"test_loss": "Test loss", "train_loss": "Train loss (every step)",
           "test_accuracy": "Test accuracy", "eval_train_loss": "Train loss (evaluated)"}


def chosen_runs(runs) -> list[str]:
    labels = {r.id: f"{r.name} · {r.status} · {time.strftime('%Y-%m-%d %H:%M', time.localtime(r.created))}"
              for r in runs}
    asked = [i for i in st.query_params.get("runs", "").split(",") if i]
    wanted = [i for i in asked if i in labels]
    if len(wanted) < len(asked) and not st.session_state.get("runs:link-read"):
        st.warning("The link names runs that this lab does not have (deleted?): "
                   + ", ".join(i for i in asked if i not in labels) + ".")
    st.session_state["runs:link-read"] = True
    chosen = st.multiselect("Runs", list(labels), default=wanted, format_func=labels.get,
                            placeholder="Choose one run to open, or two to four to compare")
    if chosen:
        st.query_params["runs"] = ",".join(chosen)
    else:
        st.query_params.pop("runs", None)
    return chosen


def history_of(run_id: str) -> History:
    try:
        return History.from_dict(store().metrics(run_id))
    except ValueError:
        return History()  # a run still training has no metrics file yet


def open_run(run_id: str) -> None:
    settings = store().settings(run_id)
    st.subheader(settings["name"])
    if settings["status"] == Status.INTERRUPTED:
        st.caption(f"{settings['status']} · id {run_id}")
        st.warning(settings.get("message", ""))
    else:
        st.caption(f"{settings['status']} · {settings.get('message', '')} · id {run_id}")
    left, right = st.columns(2)
    left.plotly_chart(training_curves(history_of(run_id)), key=f"curves-{run_id}", width="stretch")
    if settings["status"] in WITH_WEIGHTS and store().checkpoint_steps(run_id):
        try:
            view = prediction_at(run_id, store().checkpoint_steps(run_id)[-1])
            right.plotly_chart(prediction_figure(view), key=f"view-{run_id}", width="stretch")
        except ValueError as exc:
            right.error(error_sentence(exc))
    manage_run(run_id, settings)


def retrainable(settings: dict) -> bool:
    """Whether the Train page can train this run again: the lab built its model (an imported
    model's code and training are the user's), on a built-in dataset (uploaded data is not in
    the link)."""
    return not external.is_imported(settings) and settings.get("dataset") == settings.get("data")


def manage_run(run_id: str, settings: dict) -> None:
    experiment = Experiment.from_dict(settings)
    with st.expander("Settings"):
        st.json(experiment.to_dict())
    cols = st.columns(4)
    if retrainable(settings):
        query = urlencode(experiment.to_flat())
        cols[0].link_button("Train again with these settings", f"/train?{query}")
    cols[1].download_button("Download (.zip)", data=store().export_zip(run_id),
                            file_name=f"run-{run_id}.zip", mime="application/zip")
    with cols[2].popover("Rename"):
        new_name = st.text_input("New name", value=settings["name"], key=f"rename-{run_id}")
        if st.button("Save name", key=f"save-name-{run_id}"):
            try:
                store().rename(run_id, new_name)
                st.rerun()
            except ValueError as exc:
                st.error(error_sentence(exc))
    with cols[3].popover("Delete"):
        st.write("This removes the run's weights and metrics for good.")
        if st.button("Delete this run", type="primary", key=f"delete-{run_id}"):
            store().delete(run_id)
            st.query_params.pop("runs", None)
            st.rerun()


def compare_runs(run_ids: list[str]) -> None:
    names = {i: store().settings(i)["name"] for i in run_ids}
    metric = st.segmented_control("Metric", list(METRICS), format_func=METRICS.get,
                                  default="test_loss", key="compare-metric") or "test_loss"
    histories = {f"{names[i]} ({i[-6:]})": history_of(i) for i in run_ids}
    st.plotly_chart(compare_curves(histories, metric=metric), key="compare", width="stretch")
    rows = [{"run": names[i], **store().settings(i).get("summary", {})} for i in run_ids]
    st.dataframe(rows, hide_index=True)


def damaged_runs(runs) -> None:
    """Name each run that cannot be read, with the reason, and offer to delete it."""
    if not runs:
        return
    with st.expander(f"{len(runs)} damaged run{'s' if len(runs) > 1 else ''} cannot be opened", expanded=True):
        for run in runs:
            left, right = st.columns([5, 1])
            left.warning(f"**{run.name}** (id {run.id}): {run.message}")
            if right.button("Delete", key=f"delete-damaged-{run.id}"):
                store().delete(run.id)
                st.rerun()


def import_run() -> None:
    with st.expander("Import a run (.zip downloaded from this lab)"):
        file = st.file_uploader("Run file", type=["zip"], key="import-file")
        if file is not None and st.button("Import"):
            try:
                run_id = store().import_zip(file.getvalue())
                st.query_params["runs"] = run_id
                st.rerun()
            except ValueError as exc:
                st.error(error_sentence(exc))
    import_model_panel()  # your own model, from a factory the server was started with


def runs_page() -> None:
    st.title("Runs")
    listed = store().list(damaged=True)
    runs = [r for r in listed if r.status != Status.DAMAGED]
    damaged_runs([r for r in listed if r.status == Status.DAMAGED])
    if not runs:
        st.info("No runs yet: train one on the Train page.")
        import_run()
        return
    chosen = chosen_runs(runs)
    if len(chosen) == 1:
        open_run(chosen[0])
    elif 2 <= len(chosen) <= MAX_COMPARED:
        compare_runs(chosen)
    elif len(chosen) > MAX_COMPARED:
        st.warning(f"Choose at most {MAX_COMPARED} runs to compare.")
    import_run()


runs_page()
