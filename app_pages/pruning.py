"""Pruning: many criteria compared side by side on accuracy, robustness and geometry."""
from __future__ import annotations

import streamlit as st

from app_pages.lab import analysis_result, chart, run_picker
from engine import pruning, recipes
from viz import pruning as figures

SPARSITIES = [0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99]
DEFAULT_METHODS = ["magnitude", "random", "taylor", "snip", "synflow"]


def introduction() -> None:
    st.title("Pruning")
    st.write(
        "Remove a fraction of a trained network's weights by one criterion or another, optionally "
        "fine-tune, and compare what is left: accuracy on clean and corrupted test data, which "
        "layers lost most, how similar each layer stays to the dense model, and the geometry of "
        "the last layer, whose logits are feature norm times class-weight norm times the cosine "
        "of their angle (Li et al. 2022)."
    )
    st.latex(r"z_c = \lVert w_c \rVert\, \lVert f(x) \rVert \cos\theta_c")


def settings() -> dict:
    with st.sidebar:
        st.header("Pruning")
        methods = st.multiselect("Methods", pruning.method_names(), default=DEFAULT_METHODS, key="pr:methods")
        sparsities = st.multiselect("Sparsities (fraction removed)", SPARSITIES, default=[0.5, 0.8, 0.9, 0.95],
                                    key="pr:sparsities")
        finetune = st.select_slider("Fine-tuning steps", [0, 50, 100, 200, 500], value=100, key="pr:finetune")
        scope = st.radio("Scope", ["global", "layer"], horizontal=True, key="pr:scope",
                         help="global: one threshold for all layers; layer: the same fraction in every layer.")
    return dict(methods=tuple(methods), sparsities=tuple(sorted(sparsities)), finetune_steps=finetune, scope=scope)


def pruning_page() -> None:
    introduction()
    run_id = run_picker()
    if not run_id:
        return
    options = settings()
    if not options["methods"] or not options["sparsities"]:
        st.info("Choose at least one method and one sparsity in the sidebar.")
        return
    sweep = analysis_result("pruning-sweep", run_id, options, recipes.pruning_sweep, label="Pruning sweep")
    if sweep is None:
        return
    chart(figures.accuracy_curves(sweep), "pr-curves", result=sweep, name=f"pruning-{run_id}")
    chosen = st.select_slider("Look closer at sparsity", list(sweep.sparsities), value=sweep.sparsities[-1],
                              key="pr:closer")
    i = list(sweep.sparsities).index(chosen)
    left, middle, right = st.columns(3)
    left.plotly_chart(figures.layer_sparsity_bars(sweep, i), key="pr-layers", width="stretch")
    middle.plotly_chart(figures.cka_bars(sweep, i), key="pr-cka", width="stretch")
    right.plotly_chart(figures.overlap_heatmap(sweep, i), key="pr-overlap", width="stretch")
    method = st.selectbox("Last-layer geometry of", list(sweep.methods), key="pr:geometry-method")
    geometry = analysis_result("pruned-geometry", run_id,
                               dict(method=method, sparsity=float(chosen), finetune_steps=options["finetune_steps"],
                                    scope=options["scope"]),
                               recipes.pruned_geometry, label="Last-layer geometry")
    if geometry is not None:
        chart(figures.geometry_scatter(geometry), "pr-geometry", result=geometry)
    lottery(run_id)


def lottery(run_id: str) -> None:
    """Lottery tickets from the run's own initialisation, against random re-initialisation."""
    st.subheader("Lottery tickets")
    st.caption("Train from the run's initial weights, prune the smallest 20% of the survivors, rewind them "
               "to their initial values, and repeat; the control trains the same masks from a random "
               "re-initialisation (Frankle & Carbin 2019). The density after n rounds is 0.8^n.")
    left, right = st.columns(2)
    rounds = left.select_slider("Rounds", [2, 3, 4, 6, 8], value=4, key="pr:rounds")
    steps = right.select_slider("Training steps per round", [100, 200, 500, 1000, 2000], value=500, key="pr:steps")
    if not st.toggle("Find tickets (trains 2 x rounds + 1 networks)", key="pr:lottery"):
        return
    tickets = analysis_result("lottery", run_id, dict(rounds=rounds, steps=steps), recipes.lottery_tickets,
                              label="Lottery tickets")
    if tickets is not None:
        chart(figures.lottery_curves(tickets), "pr-lottery", result=tickets)


pruning_page()
