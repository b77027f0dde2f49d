"""The Runs page's "Import your own model" panel: pick a model the server was started with,
upload its weights and data, and get a run every lens opens.

Model code never comes through the browser: the panel offers only the factories named in
$DYNAMICS_LAB_MODELS when the server started (see `engine.external.offered_factories`).
"""
from __future__ import annotations

import streamlit as st

from app_pages.lab import error_sentence, store
from engine import external

TASKS = {"": "from the data and the outputs", "classification": "classification", "regression": "regression"}


def import_model_panel() -> None:
    with st.expander("Import your own model"):
        factories = external.offered_factories()
        if not factories:
            st.info(f"Start the lab with {external.MODELS_VAR}=FILE.py:FACTORY (comma-separated for several) "
                    f"to offer your own models here; their code is never uploaded. Or use "
                    f"`python -m engine import` or `engine.import_run` in a notebook.")
            return
        factory = st.selectbox("Model", factories, key="own-model:factory")
        model_args = st.text_input("Keyword arguments (JSON)", value="{}", key="own-model:args")
        weights = st.file_uploader("Weights: one .safetensors (or .pt) file, or step-<N>.safetensors files",
                                   type=["safetensors", "pt", "pth"], accept_multiple_files=True,
                                   key="own-model:weights")
        data = st.file_uploader("Data: .npz (x_train, y_train, x_test, y_test, or x, y) or .csv",
                                type=["npz", "csv"], key="own-model:data")
        task = st.selectbox("Task", list(TASKS), format_func=TASKS.get, key="own-model:task")
        name = st.text_input("Name", key="own-model:name")
        if st.button("Import model", key="own-model:import", disabled=not weights):
            try:
                run_id = external.import_uploaded(
                    factory, [(f.name, f.getvalue()) for f in weights],
                    None if data is None else (data.name, data.getvalue()),
                    model_args=model_args, task=task or None, name=name, store=store())
            except ValueError as exc:
                st.error(error_sentence(exc))
                return
            st.query_params["runs"] = run_id
            st.rerun()
