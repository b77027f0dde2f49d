"""Level sets: inputs that keep the model's confidence while turning into something else."""
from __future__ import annotations

import streamlit as st

from app_pages.lab import analysis_result, chart, checkpoint_picker, run_picker, store
from engine import recipes
from engine.experiment import load_dataset
from viz import levelset as figures


def introduction() -> None:
    st.title("Level sets")
    st.write(
        "Start from a test sample the model classifies correctly and walk toward samples of "
        "other classes, stepping only sideways to the gradient of the source class's confidence "
        "and correcting any drop (Balasubramanian & Feizi 2023). The walk ends close to the "
        "targets while the model stays as confident as at the source: its level sets are far "
        "larger than the class looks. The triangle between the source and two end points stays "
        "confident too: the level set is star-shaped."
    )
    st.latex(r"v_\perp = v - \frac{\langle g, v\rangle}{\langle g, g\rangle}\, g, \quad "
             r"x' = \mathrm{clip}(x + \eta\, v_\perp - \delta), \quad v = x_t - x,\; g = \nabla_x \mathrm{CE}(f(x), y_s)")


@st.cache_data(max_entries=32)
def default_pair(run_id: str, step: int, seed: int) -> tuple[int, int, int]:
    return recipes.levelset_pairs(store(), run_id, step, seed)


@st.cache_data(max_entries=32)
def test_size_and_features(run_id: str) -> tuple[int, int]:
    data = load_dataset(store(), run_id)
    return len(data.x_test), data.n_features


def settings(run_id: str, step: int) -> dict:
    n_test, _ = test_size_and_features(run_id)
    with st.sidebar:
        st.header("Traversal")
        seed = st.number_input("Pair seed", min_value=0, value=0, step=1, key="ls2:seed",
                               help="Another seed picks another source and targets from the test split.")
        source, target_a, target_b = default_pair(run_id, step, int(seed))
        source = st.number_input("Source (test sample)", 0, n_test - 1, source, key=f"ls2:source:{seed}")
        target_a = st.number_input("Target A", 0, n_test - 1, target_a, key=f"ls2:a:{seed}")
        target_b = st.number_input("Target B", 0, n_test - 1, target_b, key=f"ls2:b:{seed}")
        steps = st.select_slider("Steps", [50, 100, 200, 400, 800], value=200, key="ls2:steps")
        step_size = st.select_slider("Step size (share of the way)", [0.005, 0.01, 0.02, 0.05, 0.1], value=0.02,
                                     key="ls2:eta")
        threshold = st.select_slider("Allowed confidence drop", [0.01, 0.02, 0.05, 0.1, 0.2], value=0.05,
                                     key="ls2:threshold")
    return dict(step=step, source=int(source), targets=(int(target_a), int(target_b)), steps=steps,
                step_size=step_size, threshold=threshold)


def levelset_page() -> None:
    introduction()
    run_id = run_picker()
    if not run_id:
        return
    step = checkpoint_picker(run_id)
    try:
        options = settings(run_id, step)
    except ValueError as exc:
        st.error(str(exc))
        return
    path = analysis_result("levelset", run_id, options, recipes.levelset_traversal, label="Traversal")
    if path is None:
        return
    _, n_features = test_size_and_features(run_id)
    if n_features == 2:
        cmap = analysis_result("levelset-map", run_id, dict(step=step, class_index=int(path.source_class[0])),
                               recipes.levelset_map, label="Confidence map")
        if cmap is not None:
            chart(figures.path_on_map(cmap, path), "lv-map", result=path)
    elif path.input_shape is not None and len(path.input_shape) >= 2:
        for i, name in enumerate(["A", "B"]):
            st.plotly_chart(figures.snapshot_strip(path.pair(i), title=f"Toward target {name}"),
                            key=f"lv-strip-{i}", width="stretch")
    left, right = st.columns(2)
    chart(figures.path_profile(path), "lv-profile", result=path, container=left)
    triangle = analysis_result("levelset-triangle", run_id, options, recipes.levelset_triangle,
                               label="Triangle of the two end points")
    if triangle is not None:
        chart(figures.triangle_map(triangle), "lv-triangle", result=triangle, container=right)
    compare_models(run_id, path, options)


def compare_models(run_id: str, path, options: dict) -> None:
    """The same pairs walked in another run's model (dense against pruned, standard against
    robust, early against late): how confidence and distance to the targets evolve in each."""
    if not st.toggle("Compare with another run on the same pairs", key="lv:compare"):
        return
    other = run_picker("Other run (same data)", key="other")
    if not other or other == run_id:
        st.info("Choose a different run trained on the same data.")
        return
    other_path = analysis_result("levelset", other, dict(options, step=None), recipes.levelset_traversal,
                                 label="Traversal in the other run")
    if other_path is not None:
        names = [store().settings(r)["name"] for r in (run_id, other)]
        chart(figures.compare_paths([path, other_path], names), "lv-compare")


levelset_page()
