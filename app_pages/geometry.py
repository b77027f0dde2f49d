"""Representation geometry: embeddings, CKA, RSA and neural collapse of a run's layers."""
from __future__ import annotations

import streamlit as st

from app_pages.lab import analysis_result, chart, checkpoint_picker, error_sentence, finished_runs, run_picker, store
from engine import geometry, recipes
from engine.experiment import load_model
from viz import geometry as figures

MEASURES = ["cka_to_init", "cka_input", "cka_target", "effective_rank", "nc1", "nc2_angle", "nc3", "nc4"]


def introduction() -> None:
    st.title("Representation geometry")
    st.write(
        "What each layer represents, and how training shapes it: an embedding of its activations, "
        "its similarity to the other layers and to the inputs and targets (CKA), its "
        "dissimilarity structure (RSA), and how classes collapse onto their means (neural "
        "collapse). With one hidden layer, tanh representations follow the targets while ReLU "
        "keeps more of the inputs (Alleman et al. 2024)."
    )
    st.latex(r"\mathrm{CKA}(X, Y) = \frac{\lVert Y^\top X \rVert_F^2}{\lVert X^\top X \rVert_F\, \lVert Y^\top Y \rVert_F}"
             r"\quad\text{(centred columns)}")


@st.cache_data(max_entries=32)
def modules_of(run_id: str) -> tuple[dict[str, str], str]:
    """Every module of the run's model, {name: class}, then "input of READOUT" (what the final
    Linear reads, found by running two samples: with a pooling by `.mean()` or an `F.relu`
    before it, no module's output), and the layer to show first (the last hidden
    representation). Without data (a run imported without it) only the modules."""
    try:
        run = recipes.run_data(store(), run_id, samples=2)
    except ValueError:
        model = load_model(store(), run_id)
        layers = recipes.representation_layers(model)
        return geometry.module_names(model), layers[max(len(layers) - 2, 0)]
    modules = geometry.module_names(run.model)
    readout, _ = recipes.readout_and_hidden(run.model, run.x)
    if readout is not None:
        modules[recipes.INPUT_OF + readout] = "what the readout reads"
    return modules, recipes.last_hidden_layer(run.model, run.x)


def settings(run_id: str) -> dict:
    modules, first = modules_of(run_id)
    names = list(modules)
    with st.sidebar:
        st.header("Geometry")
        layer = st.selectbox("Layer", names, index=names.index(first), key="geo:layer",
                             format_func=lambda name: f"{name} · {modules[name]}",
                             help="Any module of the model: a layer, a normalization, a residual block. "
                                  "Its output for each sample, flattened, is the representation. "
                                  "'input of' the readout is what the final Linear layer reads, "
                                  "whichever module (or none) computed it.")
        method = st.radio("Embedding", ["pca", "umap"], horizontal=True, key="geo:method",
                          help="UMAP's first use on a machine compiles code (about a minute); later uses take seconds.")
        samples = st.select_slider("Samples", [200, 500, 1000, 2000], value=500, key="geo:samples")
        colour = st.radio("Colour by", list(recipes.COLOURS), horizontal=True, key="geo:colour",
                          help="label: the class (or target); prediction: what the model says; margin: the "
                               "true class's logit minus the largest other (negative where misclassified).")
    return {"layer": layer, "method": method, "samples": samples, "colour": colour}


def picked_samples(view) -> None:
    """The samples picked on the embedding chart or typed in, drawn as themselves."""
    typed = st.text_input("Samples to show", key="geo:picked", placeholder="e.g. 3, 17, 42",
                          help="Click points of the embedding, or drag a box or lasso around some (toolbar), "
                               "to see those samples here; or type their numbers (hover a point to see its number).")
    try:
        chosen = figures.selected_samples(st.session_state.get("geo-embedding"))
        chosen += [i for i in figures.parse_sample_numbers(typed, len(view.points)) if i not in chosen]
    except ValueError as exc:
        st.error(error_sentence(exc))
        return
    if chosen:
        shown = f"the first {figures.GALLERY_LIMIT} of {len(chosen)}" if len(chosen) > figures.GALLERY_LIMIT else ""
        chart(figures.sample_gallery(view, chosen, title=f"Picked samples {shown}".strip()), "geo-samples")


def geometry_page() -> None:
    introduction()
    run_id = run_picker()
    if not run_id:
        return
    s = settings(run_id)
    step = checkpoint_picker(run_id)
    left, right = st.columns(2)
    with left:
        view = analysis_result("embedding", run_id, dict(step=step, layer=s["layer"], method=s["method"],
                                                          samples=s["samples"], colour=s["colour"]),
                               recipes.embedding, label=f"{s['method'].upper()} of {s['layer']}")
        if view is not None:
            chart(figures.embedding_scatter(view, title=f"{s['layer']} at step {step:,}"), "geo-embedding",
                  result=view, select=("points", "box", "lasso"))
            st.caption("Hover a point to see its sample; click or lasso points to draw them below.")
    with right:
        cka = analysis_result("layer-cka", run_id, dict(step=step, samples=s["samples"]),
                              recipes.layer_similarity, label="CKA between layers")
        if cka is not None:
            chart(figures.similarity_heatmap(cka, title="Linear CKA between layers"), "geo-cka", result=cka)
    if view is not None:
        picked_samples(view)
    rdms = analysis_result("rsa", run_id, dict(step=step, layer=s["layer"], samples=min(s["samples"], 300)),
                           recipes.representational_dissimilarity, label="Dissimilarity matrices")
    if rdms is not None:
        chart(figures.rdm_panels(rdms, title="RSA: input, target and layer (samples sorted by label)"), "geo-rsa",
              result=rdms)
    st.subheader("Over training")
    curves = analysis_result("geometry-curves", run_id, dict(samples=s["samples"]),
                             recipes.geometry_over_training, label="Geometry at every checkpoint")
    if curves is not None:
        shown = [m for m in MEASURES if m in curves.values]
        chart(figures.geometry_curves(curves, shown), "geo-curves", result=curves)
        st.caption("cka_to_init: similarity to the same layer at initialisation (1: the layer has not moved). "
                   "cka_input / cka_target: alignment with the input and target kernels. NC1: within-class "
                   "over between-class variability; NC2: distance of class means from a simplex; NC3: "
                   "readout versus class means; NC4: disagreement with the nearest class mean.")
        alignment_panel(run_id, curves, s)
    frames = recipes.ANIMATION_FRAMES[s["method"]]
    film = analysis_result("embedding-frames", run_id, dict(layer=s["layer"], method=s["method"],
                                                            samples=s["samples"], frames=frames),
                           recipes.embedding_over_training, label=f"{s['layer']} at every checkpoint")
    if film is not None:
        chart(figures.embedding_animation(film, title=f"{s['layer']} over training ({s['method'].upper()}, aligned)"),
              "geo-film", result=film)
        st.caption("Press play or drag the slider: each frame is aligned to the one before (Procrustes for PCA, "
                   "AlignedUMAP for UMAP), so a point moves only as far as its representation does.")
    st.subheader("Across runs")
    compare_runs(run_id, s)


def alignment_panel(run_id: str, curves, s: dict) -> None:
    """Each layer's CKA with the inputs and with the targets, this run beside others (say the
    same network with another activation), with a toggle over the runs' activations."""
    st.markdown("**Input versus target alignment** (tanh follows the targets, ReLU keeps the inputs)")
    others = [r for r in finished_runs() if r.id != run_id]
    added = st.multiselect("Beside runs", [r.id for r in others], max_selections=3, key="geo:align-runs",
                           format_func={r.id: f"{r.name} · {r.id[-6:]}" for r in others}.get,
                           placeholder="Add the same network with another activation")
    results = {_activation_label(run_id): curves}
    for other in added:
        result = analysis_result("geometry-curves", other, dict(samples=s["samples"]),
                                 recipes.geometry_over_training, label="Geometry of the other run")
        if result is not None:
            results[_activation_label(other)] = result
    hidden = st.segmented_control("Hide", list(results), selection_mode="multi", key="geo:align-hide") or []
    chart(figures.alignment_by_layer({k: v for k, v in results.items() if k not in hidden},
                                     title="CKA of each layer with the inputs and the targets (last checkpoint)"),
          "geo-alignment")


def _activation_label(run_id: str) -> str:
    settings = store().settings(run_id)
    activation = settings.get("model", {}).get("activation", "imported")  # an imported model names none
    return f"{activation} · {settings['name']} · {run_id[-6:]}"


def compare_runs(run_id: str, s: dict) -> None:
    """This run's layers against another run's on the same inputs, and matched units."""
    if not st.toggle("Compare with another run", key="geo:compare"):
        return
    other = run_picker("Other run (same data)", key="other")
    if not other or other == run_id:
        st.info("Choose a different run trained on the same data.")
        return
    left, right = st.columns(2)
    with left:
        cka = analysis_result("cross-cka", run_id, dict(other=other, samples=s["samples"]),
                              recipes.cross_run_similarity, label="CKA across runs")
        if cka is not None:
            chart(figures.similarity_heatmap(cka, title="Linear CKA: this run against the other"), "geo-cross",
                  result=cka)
    with right:
        match = analysis_result("units", run_id, dict(other=other, layer=s["layer"], samples=s["samples"]),
                                recipes.matched_units, label="Matching units")
        if match is not None:
            chart(figures.unit_match_figure(match, title=f"Matched units of {s['layer']}"), "geo-units",
                  result=match)


geometry_page()
