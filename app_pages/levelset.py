"""Level sets: inputs that keep the model's confidence while turning into something else.

The source and the two targets are picked by clicking: test samples on the confidence map
for 2-D data, thumbnails in a gallery for images and signals. The pair lives in the session
and in the URL (`?pair=source,a,b`), so a reload or a shared link walks the same pair.
"""
from __future__ import annotations

from functools import partial

import streamlit as st

from app_pages.lab import analysis_result, chart, checkpoint_picker, run_picker, store
from engine import recipes
from engine.experiment import load_dataset
from viz import levelset as figures

ROLE_KEY = "lv:role"
PICK_KEY = "lv-pick"
PER_CLASS = 3  # thumbnails of each class in the gallery


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


@st.cache_data(max_entries=32)
def gallery_of(run_id: str, step: int, per_class, seed: int, pair: tuple):
    return recipes.levelset_gallery(store(), run_id, step, per_class=per_class, seed=seed, include=pair)


# ---------------------------------------------------------------- the pair, picked by clicking


def pair_key(run_id: str) -> str:
    return f"lv:pair:{run_id}"


def url_pair(n_test: int):
    """The pair in the URL, if it names three test samples."""
    parts = st.query_params.get("pair", "").split(",")
    if len(parts) == 3 and all(p.strip().isdigit() and int(p) < n_test for p in parts):
        return [int(p) for p in parts]
    return None


def chosen_pair(run_id: str, step: int, seed: int, n_test: int) -> tuple[int, int, int]:
    """The source and two targets: picked before, else from the URL, else drawn by the seed."""
    key = pair_key(run_id)
    if key not in st.session_state:
        # The URL's pair belongs to the run the page was opened with: read it once per session.
        asked = "" if st.session_state.get("lv:url-read") else st.query_params.get("pair", "")
        from_url = url_pair(n_test) if asked else None
        st.session_state["lv:url-read"] = True
        if asked and from_url is None:
            st.warning(f"The link's pair '{asked}' is not three test samples of this run (0 to {n_test - 1}): "
                       "here is a pair drawn by the seed.")
        st.session_state[key] = from_url or list(default_pair(run_id, step, seed))
    pair = tuple(st.session_state[key])
    st.query_params["pair"] = ",".join(map(str, pair))
    return pair


def new_draw(run_id: str) -> None:
    """Another pair seed: forget the picked pair, so the seed draws one."""
    st.session_state.pop(pair_key(run_id), None)
    st.query_params.pop("pair", None)


def apply_pick(run_id: str, figure, chart_key: str) -> None:
    """A click on a sample sets the role chosen above the chart, then moves to the next role."""
    picked = figures.picked_samples(figure, st.session_state.get(chart_key))
    if not picked:
        return
    role = figures.ROLES.index(st.session_state.get(ROLE_KEY) or figures.ROLES[0])
    pair = list(st.session_state[pair_key(run_id)])
    pair[role] = picked[-1]
    st.session_state[pair_key(run_id)] = pair
    st.session_state[ROLE_KEY] = figures.ROLES[(role + 1) % len(figures.ROLES)]


def picking_chart(figure, run_id: str) -> None:
    """The figure to click samples in (the map or the gallery)."""
    st.plotly_chart(figure, key=PICK_KEY, width="stretch", selection_mode="points",
                    on_select=partial(apply_pick, run_id, figure, PICK_KEY))


def role_picker(pair: tuple[int, int, int]) -> None:
    st.session_state.setdefault(ROLE_KEY, figures.ROLES[0])  # no default: clicks move it on
    st.segmented_control(
        "A click on a sample picks the", figures.ROLES, key=ROLE_KEY,
        help="After each click the next role is selected: source, then target A, then target B.")
    st.caption(f"Source: test sample {pair[0]} · target A: {pair[1]} · target B: {pair[2]}")


# ---------------------------------------------------------------- settings


def settings(run_id: str, step: int) -> dict:
    with st.sidebar:
        st.header("Traversal")
        seed = st.number_input("Pair seed", min_value=0, value=0, step=1, key="ls2:seed",
                               on_change=new_draw, args=(run_id,),
                               help="Another seed draws another source and targets (and gallery).")
        steps = st.select_slider("Steps", [50, 100, 200, 400, 800], value=200, key="ls2:steps")
        step_size = st.select_slider("Step size (share of the way)", [0.005, 0.01, 0.02, 0.05, 0.1], value=0.02,
                                     key="ls2:eta")
        threshold = st.select_slider("Allowed confidence drop", [0.01, 0.02, 0.05, 0.1, 0.2], value=0.05,
                                     key="ls2:threshold")
    return dict(step=step, steps=steps, step_size=step_size, threshold=threshold, seed=int(seed))


def levelset_page() -> None:
    introduction()
    run_id = run_picker()
    if not run_id:
        return
    step = checkpoint_picker(run_id)
    try:
        options = settings(run_id, step)
        seed = options.pop("seed")
        n_test, n_features = test_size_and_features(run_id)
        pair = chosen_pair(run_id, step, seed, n_test)
        gallery = gallery_of(run_id, step, None if n_features == 2 else PER_CLASS, seed, pair)
    except ValueError as exc:
        st.error(str(exc))
        return
    options.update(source=pair[0], targets=pair[1:])
    role_picker(pair)
    if n_features == 2:
        path = plane_views(run_id, step, options, gallery, pair)
    else:
        path = sample_views(run_id, options, gallery, pair)
    if path is None:
        return
    left, right = st.columns(2)
    chart(figures.path_profile(path), "lv-profile", result=path, container=left)
    triangle = analysis_result("levelset-triangle", run_id, options, recipes.levelset_triangle,
                               label="Triangle of the two end points")
    if triangle is not None:
        chart(figures.triangle_map(triangle), "lv-triangle", result=triangle, container=right)
    width_probe(run_id, options)
    compare_models(run_id, path, options, gallery, pair)


def width_probe(run_id: str, options: dict) -> None:
    """The confidence along random directions orthogonal to the walk toward target A."""
    if not st.toggle("Probe how wide the level set is around the walk", key="lv:width",
                     help="From a point of the walk toward target A, step along random directions "
                          "orthogonal to the path: a wide level set keeps the confidence far out."):
        return
    along = st.select_slider("Point along the walk", [0.0, 0.25, 0.5, 0.75, 1.0], value=0.5, key="lv:along",
                             format_func=lambda a: {0.0: "source", 1.0: "end"}.get(a, f"{a:.0%}"))
    probe = analysis_result("levelset-width", run_id, dict(options, along=along), recipes.levelset_width,
                            label="Width probe")
    if probe is not None:
        left, _ = st.columns(2)
        chart(figures.width_profile(probe, title="Confidence sideways from the walk"), "lv-width",
              result=probe, container=left)


def plane_views(run_id: str, step: int, options: dict, gallery, pair):
    """2-D data: the source class's confidence map with the test samples to click and the paths."""
    source_class = int(gallery.predicted[gallery.position(pair[0])])
    cmap = analysis_result("levelset-map", run_id, dict(step=step, class_index=source_class),
                           recipes.levelset_map, label="Confidence map")
    path = analysis_result("levelset", run_id, options, recipes.levelset_traversal, label="Traversal")
    last_map = f"lv:map:{run_id}"
    if cmap is not None:
        st.session_state[last_map] = cmap
    else:  # keep the last map to click on while the new source's class is mapped
        cmap = st.session_state.get(last_map)
    if cmap is not None:
        picking_chart(figures.path_on_map(cmap, path, gallery=gallery, chosen=pair,
                                          title="Click a test sample to pick it"), run_id)
    return path


def sample_views(run_id: str, options: dict, gallery, pair):
    """Images and signals: a gallery to click, then the snapshots of both walks."""
    picking_chart(figures.sample_gallery(gallery, pair, title="Click a thumbnail to pick it"), run_id)
    path = analysis_result("levelset", run_id, options, recipes.levelset_traversal, label="Traversal")
    if path is not None:
        for i, name in enumerate(["A", "B"]):
            st.plotly_chart(figures.snapshot_strip(path.pair(i), title=f"Toward target {name}"),
                            key=f"lv-strip-{i}", width="stretch")
    return path


def compare_models(run_id: str, path, options: dict, gallery, pair) -> None:
    """The same pairs walked in another run's model (dense against pruned, standard against
    robust, early against late): the two side by side, and how confidence and distance to
    the targets evolve in each."""
    if not st.toggle("Compare with another run on the same pairs", key="lv:compare"):
        return
    other = run_picker("Other run (same data)", key="other")
    if not other or other == run_id:
        st.info("Choose a different run trained on the same data.")
        return
    other_path = analysis_result("levelset", other, dict(options, step=None), recipes.levelset_traversal,
                                 label="Traversal in the other run")
    if other_path is None:
        return
    names = [store().settings(r)["name"] for r in (run_id, other)]
    chart(figures.compare_paths([path, other_path], names), "lv-compare")
    runs = ((run_id, options["step"], path, names[0]), (other, None, other_path, names[1]))
    for column, (rid, step, walk, name) in zip(st.columns(2), runs):
        if gallery.x.shape[1] == 2:
            cmap = analysis_result("levelset-map", rid, dict(step=step, class_index=int(walk.source_class[0])),
                                   recipes.levelset_map, label=f"Confidence map of {name}")
            if cmap is not None:
                column.plotly_chart(figures.path_on_map(cmap, walk, gallery=gallery, chosen=pair, title=name),
                                    key=f"lv-compare-map-{rid}", width="stretch")
        else:
            for i, target in enumerate(["A", "B"]):
                column.plotly_chart(figures.snapshot_strip(walk.pair(i), n_snapshots=4,
                                                           title=f"{name}: toward target {target}"),
                                    key=f"lv-compare-strip-{rid}-{i}", width="stretch")


levelset_page()
