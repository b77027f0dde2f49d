"""Pruning: many criteria compared side by side on accuracy, robustness and geometry."""
from __future__ import annotations

import math

import streamlit as st

from app_pages.lab import analysis_result, chart, run_picker, store
from engine import pruning, recipes
from engine.sweep import configured_backend, where
from viz import pruning as figures

SPARSITIES = [0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998]
DEFAULT_METHODS = ["magnitude", "random", "taylor", "synflow"]  # snip would repeat taylor's masks
FINETUNE_STEPS = [0, 50, 100, 200, 500, 1000, 2000]
PRUNE_AT = {"trained weights": False, "initial weights (then train)": True}


def introduction() -> None:
    st.title("Pruning")
    st.write(
        "Remove a fraction of a trained network's weights by one criterion or another, optionally "
        "fine-tune, and compare what is left: accuracy on clean and corrupted test data, which "
        "layers lost most, how similar each layer stays to the dense model, which test samples "
        "change their prediction first, and the geometry of the last layer, whose logits are "
        "feature norm times class-weight norm times the cosine of their angle (Li et al. 2022)."
    )
    st.latex(r"z_c = \lVert w_c \rVert\, \lVert f(x) \rVert \cos\theta_c")


def settings() -> dict:
    with st.sidebar:
        st.header("Pruning")
        methods = st.multiselect("Methods", pruning.method_names(), default=DEFAULT_METHODS, key="pr:methods")
        sparsities = st.multiselect("Sparsities (fraction removed)", SPARSITIES, default=[0.5, 0.8, 0.9, 0.95],
                                    key="pr:sparsities")
        at = st.radio("Prune the run's", list(PRUNE_AT), key="pr:at",
                      help="Initial weights: pruning at initialisation (SNIP, GraSP, SynFlow); the pruned "
                           "networks then train for the training steps after pruning, and are compared with the run's "
                           "trained dense model.")
        finetune = st.select_slider("Training steps after pruning", FINETUNE_STEPS, value=100, key="pr:finetune",
                                    help="Steps of the run's optimizer on every pruned network. Trained weights: "
                                         "fine-tuning (0 measures them as pruned). Initial weights: their whole "
                                         "training, so at least one step.")
        scope = st.radio("Scope", ["global", "layer"], horizontal=True, key="pr:scope",
                         help="global: one threshold for all layers; layer: the same fraction in every layer.")
    return dict(methods=tuple(methods), sparsities=tuple(sorted(sparsities)), finetune_steps=finetune, scope=scope,
                at_init=PRUNE_AT[at])


def pruning_page() -> None:
    introduction()
    run_id = run_picker()
    if not run_id:
        return
    options = settings()
    if not options["methods"] or not options["sparsities"]:
        st.info("Choose at least one method and one sparsity in the sidebar.")
        return
    method_notes(options["methods"], options["at_init"])
    st.caption(f"Run on: {run_on()}. Each method at each sparsity is one task, and each pruned model is kept "
               "as a run, so a cancelled sweep resumes where it stopped.")
    cells = [f"{method} {sparsity * 100:g}%" for method in options["methods"] for sparsity in options["sparsities"]]
    sweep = analysis_result("pruning-sweep", run_id, options, recipes.pruning_sweep, label="Pruning sweep",
                            cells=cells)
    if sweep is None:
        return
    left, right = st.columns(2)
    with left:
        chart(figures.accuracy_curves(sweep, title="test accuracy"), "pr-curves", result=sweep,
              name=f"pruning-{run_id}")
    with right:
        measure = st.selectbox("Beside it", list(figures.MEASURES), key="pr:measure",
                               help="Sharpness is the top eigenvalue of the training loss's Hessian over the kept "
                                    "weights; flipped: test samples predicted another class than by the dense model.")
        chart(figures.measure_curves(sweep, measure), "pr-measure")
    chosen = st.select_slider("Look closer at sparsity", list(sweep.sparsities), value=sweep.sparsities[-1],
                              key="pr:closer")
    i = list(sweep.sparsities).index(chosen)
    left, middle, right = st.columns(3)
    left.plotly_chart(figures.layer_sparsity_bars(sweep, i), key="pr-layers", width="stretch")
    middle.plotly_chart(figures.cka_bars(sweep, i), key="pr-cka", width="stretch")
    right.plotly_chart(figures.overlap_heatmap(sweep, i), key="pr-overlap", width="stretch")
    at_chosen = {k: v for k, v in options.items() if k != "sparsities"} | {"sparsity": float(chosen)}
    if list(store().settings(run_id).get("input_shape", [])) == [2]:
        decision_regions(run_id, at_chosen)
    method = st.selectbox("Look closer at method", list(sweep.methods), key="pr:method")
    one = {k: v for k, v in at_chosen.items() if k != "methods"} | {"method": method}
    geometry_and_masks(run_id, one, classifier=math.isfinite(sweep.dense_accuracy))
    if math.isfinite(sweep.dense_accuracy):
        gallery(run_id, {k: v for k, v in options.items() if k != "methods"} | {"method": method})
    channels(run_id)
    lottery(run_id)


def run_on() -> str:
    """Where the page's sweeps run, in words: "this machine", or "Ray at ADDRESS" when the lab
    is configured with a Ray cluster (`engine.sweep.configured_backend`)."""
    return where(*configured_backend())


def method_notes(methods: tuple, at_init: bool) -> None:
    """What the chosen criteria mean here: methods that keep the same weights, and criteria
    meant only for pruning at initialisation when trained weights are pruned."""
    for group, why in pruning.same_masks(methods).items():
        st.caption(f"{' and '.join(group)} keep the same weights, so their curves coincide: {why}.")
    early = pruning.init_only(methods)
    if early and not at_init:
        st.warning(f"{', '.join(early)}: a criterion for pruning at initialisation, which "
                   "keeps the weights that let gradients flow in the training to come. On trained weights the "
                   "gradient is near zero, and so is the score: its masks are close to arbitrary. Choose "
                   "'initial weights (then train)' in the sidebar to see it as it is meant.")


def decision_regions(run_id: str, settings: dict) -> None:
    """The dense model's decision regions beside each pruned model's (2-D data only)."""
    st.subheader("Decision regions")
    regions = analysis_result("pruning-regions", run_id, settings, recipes.pruning_regions,
                              label="Decision regions of the pruned models")
    if regions is not None:
        chart(figures.regions_side_by_side(
            regions, title=f"dense and pruned to {settings['sparsity']:.1%}, test accuracy in the titles"),
            "pr-regions", result=regions)


def geometry_and_masks(run_id: str, settings: dict, classifier: bool) -> None:
    """One method at one sparsity: its last-layer geometry and which weights it keeps."""
    left, right = st.columns(2)
    if classifier:
        with left:
            geometry = analysis_result("pruned-geometry", run_id, settings, recipes.pruned_geometry,
                                       label="Last-layer geometry")
            if geometry is not None:
                chart(figures.geometry_scatter(geometry, title="last-layer geometry"), "pr-geometry",
                      result=geometry)
    mask_settings = {k: settings[k] for k in ("method", "sparsity", "scope", "at_init")}
    with right if classifier else left:
        masks = analysis_result("pruning-masks", run_id, mask_settings, recipes.pruning_masks, label="Masks")
        if masks is not None:
            chart(figures.mask_images(masks.masks, title="kept weights (dark), rows are units"), "pr-masks",
                  result=masks)


def gallery(run_id: str, settings: dict) -> None:
    """The test samples whose prediction this method changes first, and some it never changes."""
    st.subheader("Fragile and robust samples")
    st.caption("A sample flips when the pruned model predicts another class than the dense one (Hooker et al. "
               "2019 call them pruning identified exemplars). Fragile: they flip at the lowest sparsity; "
               "robust: they keep the dense prediction up to the highest.")
    result = analysis_result("pruning-gallery", run_id, settings, recipes.pruning_gallery,
                             label="Fragile and robust samples")
    if result is not None:
        chart(figures.flip_gallery(result, title=f"pruned by {result.method}"), "pr-gallery", result=result)


def channels(run_id: str) -> None:
    """Structured pruning of a conv net: whole channels removed, a smaller model that computes
    what the model with those channels masked computes."""
    st.subheader("Removing conv channels")
    st.caption("Each conv layer's channels with the smallest filters (L1 norm, Li et al. 2017) go for real: "
               "the conv loses output channels, its BatchNorm the same entries, the next layer the inputs that "
               "read them. The smaller model must compute what the masked one computes. Channels that also feed "
               "a residual connection cannot go, and are named below.")
    left, right = st.columns(2)
    sparsity = left.select_slider("Fraction of channels removed", [0.25, 0.5, 0.75], value=0.5, key="pr:ch-sparsity")
    scope = right.radio("Channels ranked", ["layer", "global"], horizontal=True, key="pr:ch-scope",
                        help="layer: the same fraction in every conv layer; global: one threshold for all.")
    if not st.toggle("Remove channels", key="pr:channels"):
        return
    result = analysis_result("channel-removal", run_id, dict(sparsity=sparsity, scope=scope),
                             recipes.channel_removal, label="Removing conv channels")
    if result is None:
        return
    before, after = (int(n) for n in result.parameters)
    dense, masked, smaller = result.accuracy
    a, b, c = st.columns(3)
    a.metric("Parameters", f"{after:,}", f"{after - before:,} of {before:,}")
    b.metric("Test accuracy, masked", f"{masked:.1%}", f"{masked - dense:+.1%} from dense")
    c.metric("Test accuracy, smaller model", f"{smaller:.1%}",
             f"largest output difference {result.largest_difference:.1e}", delta_color="off")
    chart(figures.channel_bars(result), "pr-channels", result=result)
    for layer, why in result.unsafe.items():
        st.caption(f"{layer}: kept whole, since {why}")


def lottery(run_id: str) -> None:
    """Lottery tickets from the run's own initialisation, against random re-initialisation."""
    st.subheader("Lottery tickets")
    st.caption("Train from the run's initial weights, prune the smallest 20% of the survivors, rewind them "
               "to their initial values, and repeat; the control trains the same masks from a random "
               "re-initialisation (Frankle & Carbin 2019). The density after n rounds is 0.8^n.")
    left, right = st.columns(2)
    rounds = left.select_slider("Rounds", [2, 3, 4, 6, 8], value=4, key="pr:rounds")
    steps = right.select_slider("Training steps per round", [100, 200, 500, 1000, 2000], value=500, key="pr:steps")
    st.caption(f"Run on: {run_on()}. Each round is one task once the round before has finished, its control "
               "beside it; every network is kept as a run, so a cancelled chain resumes from its last round.")
    if not st.toggle("Find tickets (trains 2 x rounds + 1 networks)", key="pr:lottery"):
        return
    cells = ["round 0"] + [f"round {r} {network}" for r in range(1, rounds + 1) for network in ("ticket", "control")]
    tickets = analysis_result("lottery", run_id, dict(rounds=rounds, steps=steps), recipes.lottery_tickets,
                              label="Lottery tickets", cells=cells, cells_title="Rounds")
    if tickets is not None:
        chart(figures.lottery_curves(tickets), "pr-lottery", result=tickets)


pruning_page()
