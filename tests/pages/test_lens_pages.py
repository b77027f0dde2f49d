"""Lens pages in AppTest: each computes its analyses of a stored run as jobs and draws them."""
from __future__ import annotations

import json
import time

import pytest
from apptest_helpers import Quiet, plotly_specs, second_run

import app_pages.lab as lab
from engine.experiment import Experiment, train_job
from engine.models import ModelSpec
from engine.train import TrainConfig


def trace_types(specs) -> set[str]:
    return {trace.get("name") or trace["type"] for spec in specs for trace in spec["data"]}


def poll_until_charts(at, until, timeout: float = 120.0):
    """Rerun the page (as the progress fragment's timer would) until `until(charts)` holds."""
    deadline = time.monotonic() + timeout
    while not until(plotly_specs(at)):
        assert time.monotonic() < deadline, f"charts {trace_types(plotly_specs(at))} after {timeout} s"
        time.sleep(0.3)
        at.run()
        assert not at.exception, at.exception
        assert not at.error, [e.value for e in at.error]
    return plotly_specs(at)


def contour_size(specs) -> int:
    """The number of columns of the first contour on the page (0 when there is none)."""
    z = next((t["z"] for s in specs for t in s["data"] if t["type"] == "contour"), None)
    if z is None:
        return 0
    # plotly sends numpy arrays as typed buffers with their shape, lists as nested lists
    return int(z["shape"].split(",")[-1]) if isinstance(z, dict) else len(z[0])


def test_landscape_draws_contour_and_surface_of_a_run(open_page, stored_run):
    at = open_page("landscape")
    poll_until_charts(at, lambda specs: {"contour", "surface"} <= trace_types(specs))


def test_landscape_shows_a_coarse_grid_first_then_the_full_grid(open_page, stored_run):
    at = open_page("landscape")
    at.select_slider(key="ls:samples").set_value(250).run()
    specs = poll_until_charts(at, lambda specs: contour_size(specs) > 0)
    assert contour_size(specs) == 11 and len(at.get("progress")) > 0
    poll_until_charts(at, lambda specs: contour_size(specs) == 31)


def test_landscape_slices_show_train_and_test_loss_and_accuracy(open_page, stored_run):
    at = open_page("landscape")
    at.select_slider(key="ls:samples").set_value(250).run()
    names = {"train loss", "test loss", "train accuracy", "test accuracy"}
    poll_until_charts(at, lambda specs: names <= trace_types(specs))


def test_landscape_draws_the_trajectory_plane(open_page, stored_run):
    at = open_page("landscape")
    at.radio(key="ls:plane").set_value("training trajectory (PCA)").run()
    poll_until_charts(at, lambda specs: {"contour", "trajectory"} <= trace_types(specs))


def test_ntk_draws_spectra_eigenfunctions_and_the_kernel_trajectory(open_page, stored_run):
    at = open_page("ntk")
    at.select_slider(key="ntk:samples").set_value(100).run()
    # per checkpoint: spectrum, target power, layers, eigenfunctions; then trajectory, target power over training
    poll_until_charts(at, lambda specs: len(specs) >= 10)


def test_the_ntk_pages_default_spectrum_is_the_overviews(open_page):
    """The same run and step read the same power-law exponent on both pages (not k^-2.44 against k^-2.50)."""
    from app_pages.overview import PANELS
    at = open_page("ntk")
    shown = {"samples": at.select_slider(key="ntk:samples").value, "kind": at.radio(key="ntk:kind").value}
    overview = next(panel for panel in PANELS if panel.key == "ntk-spectrum")
    assert overview.settings({}, 7) == {"step": 7, **shown}


def test_ntk_shows_digits_eigenvectors_by_their_extreme_samples(open_page, lab_home):
    experiment = Experiment("digits", {}, ModelSpec(width=8, depth=1), TrainConfig(steps=10, checkpoint_every=5))
    train_job(Quiet(), experiment, store=lab.store(), device="cpu")
    at = open_page("ntk")
    at.select_slider(key="ntk:samples").set_value(100).run()
    at.slider(key="ntk:k").set_value(3).run()
    specs = poll_until_charts(at, lambda specs: sum("Samples at the ends" in json.dumps(s["layout"]) for s in specs) == 2)
    images = [s for s in specs if "Samples at the ends" in json.dumps(s["layout"])][0]
    assert [t["type"] for t in images["data"]] == ["heatmap"] * 18  # 3 eigenvectors x 6 images
    assert images["data"][0]["z"]["shape"] == "8, 8"


def test_geometry_draws_embedding_cka_rsa_curves_and_the_film_of_every_checkpoint(open_page, stored_run):
    at = open_page("geometry")
    at.select_slider(key="geo:samples").set_value(200).run()
    specs = poll_until_charts(at, lambda specs: len(specs) >= 5)
    film = [spec for spec in specs if spec.get("frames")]
    assert len(film) == 1 and [frame["name"] for frame in film[0]["frames"]] == ["0", "20", "40", "60"]


def test_levelset_draws_the_map_the_profile_and_the_triangle(open_page, stored_run):
    at = open_page("levelset")
    at.select_slider(key="ls2:steps").set_value(50).run()
    poll_until_charts(at, lambda specs: len(specs) >= 3)


def plotly_array(value):
    """A figure's array as JSON gives it: a list, or plotly's typed array (dtype, bdata, shape)."""
    import base64

    import numpy as np

    if not isinstance(value, dict):
        return np.asarray(value)
    shape = [int(s) for s in str(value.get("shape", "-1")).split(",")]
    return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).reshape(shape)


def click_sample(at, position: int) -> int:
    """Click the `position`-th point of the picking chart's samples trace, as a browser's
    click selects it (AppTest has no API for chart selections: the event goes in as the
    chart's widget state); return the test sample clicked."""
    from streamlit.proto.WidgetStates_pb2 import WidgetState

    from viz.levelset import SAMPLES

    chart = next(el for el in at.get("plotly_chart") if el.proto.selection_mode)
    spec = json.loads(chart.proto.spec)
    curve = [trace.get("name") for trace in spec["data"]].index(SAMPLES)
    point = {"curve_number": curve, "point_index": position, "point_number": position}
    state = WidgetState(id=chart.proto.id, string_value=json.dumps(
        {"selection": {"points": [point], "point_indices": [position], "box": [], "lasso": []}}))
    states = at._tree.get_widget_states()
    states.widgets.append(state)
    at._run(states)
    assert not at.exception, at.exception
    return int(plotly_array(spec["data"][curve]["customdata"])[position][0])


def source_on_the_map(specs):
    """(x of the sample named "source" on the map, x of the path's source), or Nones."""
    for spec in specs:
        named = [a["x"] for a in spec["layout"].get("annotations", []) if a.get("text") == "source"]
        source = [t for t in spec["data"] if t.get("name") == "source"]
        if named and source:
            return named[0], plotly_array(source[0]["x"])[0]
    return None, None


def test_levelset_click_on_the_map_picks_the_source_walks_from_it_and_keeps_it_in_the_url(open_page, stored_run):
    at = open_page("levelset")
    at.select_slider(key="ls2:steps").set_value(50).run()
    poll_until_charts(at, lambda specs: len(specs) >= 3)
    source, a, b = at.query_params["pair"].split(",")
    sample = click_sample(at, 3)
    assert sample != int(source)
    assert at.query_params["pair"] == f"{sample},{a},{b}"
    assert at.session_state["lv:role"] == "target A", "the next click picks target A"
    specs = poll_until_charts(at, lambda specs: len(specs) >= 3 and None not in source_on_the_map(specs))
    picked, walked_from = source_on_the_map(specs)
    assert picked == pytest.approx(walked_from)


def test_levelset_probes_the_width_of_the_level_set_around_the_walk(open_page, stored_run):
    at = open_page("levelset")
    at.select_slider(key="ls2:steps").set_value(50).run()
    poll_until_charts(at, lambda specs: len(specs) >= 3)
    at.toggle(key="lv:width").set_value(True).run()
    poll_until_charts(at, lambda specs: any("Confidence sideways" in json.dumps(s["layout"]) for s in specs))


def test_levelset_walks_the_pair_named_in_the_url(lab_home, stored_run):
    from apptest_helpers import APP, PAGES
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["pair"] = "7,8,9"
    at.run()
    at.switch_page(PAGES["levelset"]).run()
    assert not at.exception, at.exception
    assert "Source: test sample 7 · target A: 8 · target B: 9" in [c.value for c in at.caption]


def test_levelset_on_digits_picks_from_a_gallery_and_shows_snapshot_strips(open_page, lab_home):
    experiment = Experiment("digits", {}, ModelSpec(width=16, depth=1), TrainConfig(steps=30, eval_every=30))
    train_job(Quiet(), experiment, store=lab.store(), device="cpu")
    at = open_page("levelset")
    at.select_slider(key="ls2:steps").set_value(50).run()
    specs = poll_until_charts(at, lambda specs: len(specs) >= 5)
    assert specs[0]["data"][0]["type"] == "heatmap", "the gallery of thumbnails comes first"
    at.segmented_control(key="lv:role").set_value("target B").run()
    sample = click_sample(at, 0)
    assert at.query_params["pair"].split(",")[2] == str(sample)
    poll_until_charts(at, lambda specs: len(specs) >= 5)


def test_pruning_draws_the_sweep_regions_geometry_masks_and_gallery(open_page, stored_run):
    at = open_page("pruning")
    at.multiselect(key="pr:methods").set_value(["magnitude", "random"]).run()
    at.multiselect(key="pr:sparsities").set_value([0.5, 0.9]).run()
    at.select_slider(key="pr:finetune").set_value(0).run()
    specs = poll_until_charts(at, lambda specs: len(specs) >= 9)
    titles = [str(s["layout"].get("title", {}).get("text")) for s in specs]
    assert "sharpness (top Hessian eigenvalue)" in json.dumps([s["layout"] for s in specs])
    regions = next(s for s in specs if "dense and pruned" in str(s["layout"].get("title")))
    assert [t["type"] for t in regions["data"]].count("image") == 3  # dense, magnitude, random
    assert any("kept weights" in t for t in titles) and any("pruned by magnitude" in t for t in titles)


def pruning_page_with(open_page, methods: list[str]):
    """The pruning page set to a quick sweep (one sparsity, no training) of `methods`."""
    at = open_page("pruning")
    at.select_slider(key="pr:finetune").set_value(0).run()
    at.multiselect(key="pr:sparsities").set_value([0.5]).run()
    at.multiselect(key="pr:methods").set_value(methods).run()
    return at


def test_pruning_says_when_taylor_and_snip_keep_the_same_weights(open_page, stored_run):
    at = pruning_page_with(open_page, ["taylor", "snip"])
    assert any("taylor and snip keep the same weights" in c.value for c in at.caption)
    at.multiselect(key="pr:methods").set_value(["taylor", "magnitude"]).run()
    assert not any("keep the same weights" in c.value for c in at.caption)


def test_pruning_warns_that_grasp_is_meant_for_initial_weights(open_page, stored_run):
    at = pruning_page_with(open_page, ["grasp"])
    assert any("pruning at initialisation" in w.value for w in at.warning)
    at.select_slider(key="pr:finetune").set_value(50).run()
    at.radio(key="pr:at").set_value("initial weights (then train)").run()
    assert not any("pruning at initialisation" in w.value for w in at.warning)


def test_pruning_training_steps_are_labelled_for_every_case(open_page, stored_run):
    slider = open_page("pruning").select_slider(key="pr:finetune")
    assert slider.label == "Training steps after pruning"


def test_landscape_compares_two_runs_and_the_path_between_them(open_page, stored_run):
    other = second_run()
    at = open_page("landscape")
    at.toggle(key="ls:compare").set_value(True).run()
    at.multiselect(key="picker:runs").set_value([stored_run, other]).run()
    specs = poll_until_charts(
        at, lambda specs: len(specs) >= 2 and any("barrier" in str(s["layout"].get("title")) for s in specs))
    assert {"train loss", "test loss", "train accuracy", "test accuracy"} <= trace_types(specs)
    assert any("for t between 0 and 1" in c.value for c in at.caption)  # how the barrier is read


def test_landscape_draws_the_plane_through_three_runs_with_the_runs_marked(open_page, stored_run):
    others = [second_run(), second_run(seed=2)]
    at = open_page("landscape")
    at.select_slider(key="ls:samples").set_value(250).run()
    at.toggle(key="ls:compare").set_value(True).run()
    at.multiselect(key="picker:runs").set_value([stored_run, *others]).run()
    at.toggle(key="ls:three").set_value(True).run()
    poll_until_charts(at, lambda specs: "models" in trace_types(specs))


def test_levelset_compares_two_runs_on_the_same_pairs(open_page, stored_run):
    at = open_page("levelset")
    at.select_slider(key="ls2:steps").set_value(50).run()
    poll_until_charts(at, lambda specs: len(specs) >= 3)
    other = second_run()
    at.toggle(key="lv:compare").set_value(True).run()
    at.selectbox(key="picker:other").set_value(other).run()
    poll_until_charts(at, lambda specs: any("mean confidence" in json.dumps(s["layout"]) for s in specs))
    # Side by side: each run's confidence map with its walk of the same pair.
    def map_with_path(spec) -> bool:
        return {"contour", "path"} <= {t["type"] for t in spec["data"]} | {t.get("name") for t in spec["data"]}

    poll_until_charts(at, lambda specs: sum(map(map_with_path, specs)) >= 3)


def test_pruning_finds_lottery_tickets(open_page, stored_run):
    at = open_page("pruning")
    at.multiselect(key="pr:methods").set_value(["magnitude"]).run()
    at.multiselect(key="pr:sparsities").set_value([0.5]).run()
    at.select_slider(key="pr:finetune").set_value(0).run()
    poll_until_charts(at, lambda specs: len(specs) >= 1)
    at.select_slider(key="pr:rounds").set_value(2).run()
    at.select_slider(key="pr:steps").set_value(100).run()
    at.toggle(key="pr:lottery").set_value(True).run()
    poll_until_charts(at, lambda specs: "random re-init" in trace_types(specs))


def test_geometry_compares_two_runs_layer_by_layer_and_unit_by_unit(open_page, stored_run):
    at = open_page("geometry")
    at.select_slider(key="geo:samples").set_value(200).run()
    poll_until_charts(at, lambda specs: len(specs) >= 4)
    other = second_run()
    at.toggle(key="geo:compare").set_value(True).run()
    at.selectbox(key="picker:other").set_value(other).run()
    poll_until_charts(at, lambda specs: len(specs) >= 6)


def test_landscape_curvature_panel_draws_sharpness_density_and_convexity(open_page, stored_run):
    at = open_page("landscape")
    at.select_slider(key="ls:samples").set_value(250).run()
    poll_until_charts(at, lambda specs: {"contour", "surface"} <= trace_types(specs))
    at.toggle(key="ls:hessian").set_value(True).run()
    poll_until_charts(at, lambda specs: len(specs) >= 4)
    at.toggle(key="ls:convexity").set_value(True).run()
    poll_until_charts(at, lambda specs: len(specs) >= 5)


def test_geometry_draws_the_samples_whose_numbers_are_typed(open_page, stored_run):
    at = open_page("geometry")
    at.select_slider(key="geo:samples").set_value(200).run()
    poll_until_charts(at, lambda specs: len(specs) >= 5)
    at.text_input(key="geo:picked").input("3, 17").run()
    picked = [s for s in plotly_specs(at) if "Picked samples" in json.dumps(s["layout"].get("title"))]
    assert len(picked) == 1 and picked[0]["data"][-1]["text"] == ["#3", "#17"]


def test_geometry_puts_another_runs_input_and_target_alignment_beside_this_ones(open_page, stored_run):
    other = second_run()
    at = open_page("geometry")
    at.selectbox(key="picker:run").set_value(stored_run).run()
    poll_until_charts(at, lambda specs: any(s["layout"].get("title", {}).get("text", "").startswith("CKA of each layer")
                                            for s in specs))
    at.multiselect(key="geo:align-runs").set_value([other]).run()
    title = "CKA of each layer with the inputs and the targets (last checkpoint)"
    poll_until_charts(at, lambda specs: any(s["layout"].get("title", {}).get("text") == title
                                            and len(s["data"]) == 4 for s in specs))  # two runs, two lines each
