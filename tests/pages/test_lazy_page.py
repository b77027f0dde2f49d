"""The lazy-versus-rich page in AppTest: a lesson step, a free comparison trained live, a sweep."""
from __future__ import annotations

import time

from apptest_helpers import button, open_link, plotly_specs

import app_pages.lab as lab
import app_pages.lazy as lazy_page


def titles(at) -> list[str]:
    return [spec["layout"].get("title", {}).get("text") for spec in plotly_specs(at)]


def wait_for_jobs(at, timeout: float = 120.0):
    """Rerun the page, as its fragment's timer would, until every job of the session is done."""
    deadline = time.monotonic() + timeout
    while True:
        at.run()
        assert not at.exception, at.exception
        states = lab.jobs().list(at.session_state["owner"])
        if states and all(s.done for s in states):
            at.run()
            return states
        assert time.monotonic() < deadline, [(s.label, s.status, s.message) for s in states]
        time.sleep(0.3)


def test_a_lesson_step_says_what_to_watch_and_its_knob_sets_the_last_run(open_page):
    at = open_page("lazy")
    assert "Watch:" in at.info[0].value
    at.select_slider(key="lazy:knob:lazy-1-output-scale").set_value("100").run()
    assert not at.exception, at.exception
    assert any("alpha 100" in c.value for c in at.caption), [c.value for c in at.caption]


def test_two_configurations_train_together_with_their_twins(open_page):
    at = open_page("lazy")
    at.segmented_control(key="lazy:mode").set_value("Free comparison").run()
    at.number_input(key="lazy:steps").set_value(20)
    for i in range(2):
        at.select_slider(key=f"lazy:width:{i}").set_value(16)
    at.run()
    button(at, "Train together").click().run()
    states = wait_for_jobs(at)
    assert [s.status for s in states] == ["done", "done"], [(s.status, s.error) for s in states]
    shown = titles(at)
    assert "The network against its linearized twin" in shown and "Test loss" in shown, shown
    assert shown[0] == lazy_page.DECIDING_TITLE, shown  # the evidence comes before the fits
    twin = next(spec for spec in plotly_specs(at)
                if spec["layout"].get("title", {}).get("text") == "The network against its linearized twin")
    assert len(twin["data"]) == 4  # each run's network and twin
    at.segmented_control(key="lazy:mode").set_value("Saved runs").run()  # the same runs, from the store
    assert not at.exception, at.exception
    assert "The network against its linearized twin" in titles(at), titles(at)


def test_a_bad_setting_in_a_configuration_is_a_sentence(open_page):
    at = open_page("lazy")
    at.segmented_control(key="lazy:mode").set_value("Free comparison").run()
    at.text_input(key="lazy:lr:1").set_value("fast").run()
    assert at.error and "not a number" in at.error[0].value
    assert button(at, "Train together").disabled


def test_the_phase_diagram_sweeps_and_links_each_cell_to_its_run(open_page):
    at = open_page("lazy")
    at.segmented_control(key="lazy:mode").set_value("Phase diagram").run()
    at.text_input(key="phase:alphas").set_value("0.1, 10")
    at.text_input(key="phase:widths").set_value("8, 16")
    at.number_input(key="phase:steps").set_value(20)
    at.run()
    button(at, "Run the sweep").click().run()
    wait_for_jobs(at)
    assert {"Relative weight change", "Kernel distance", "Test loss"} <= set(titles(at)), titles(at)
    links = at.get("page_link")
    assert any("runs=" in str(link.proto) or link.proto.page.endswith("runs.py") for link in links)


def progress_texts(at) -> list[str]:
    return [p.proto.text for p in at.get("progress")]


def test_results_stay_under_the_step_or_mode_that_trained_them(open_page):
    at = open_page("lazy")
    button(at, "Train these runs together").click().run()  # step 1's runs; they need not finish
    step_one = progress_texts(at)
    assert step_one, "step 1's runs are not followed"
    at.segmented_control(key="lazy:step").set_value(2).run()
    assert not at.exception, at.exception
    assert not progress_texts(at) and not plotly_specs(at), "step 1's runs shown under step 2"
    at.segmented_control(key="lazy:mode").set_value("Free comparison").run()
    assert not progress_texts(at) and not plotly_specs(at), "the lesson's runs shown under the free comparison"
    at.segmented_control(key="lazy:mode").set_value("Lesson").run()
    at.segmented_control(key="lazy:step").set_value(1).run()
    assert [t.split(":")[0] for t in progress_texts(at)] == [t.split(":")[0] for t in step_one]


def test_a_diverged_configuration_says_so_on_its_bar(open_page):
    at = open_page("lazy")
    at.segmented_control(key="lazy:mode").set_value("Free comparison").run()
    at.number_input(key="lazy:steps").set_value(10000)
    for i in range(2):
        at.select_slider(key=f"lazy:width:{i}").set_value(16)
    at.text_input(key="lazy:lr:0").set_value("90")
    at.text_input(key="lazy:alpha:0").set_value("")
    at.run()
    button(at, "Train together").click().run()
    deadline = time.monotonic() + 120
    while not any("diverged · step" in t for t in progress_texts(at)):
        assert time.monotonic() < deadline, progress_texts(at)
        time.sleep(0.3)
        at.run()
        assert not at.exception, at.exception


def test_a_link_to_a_lesson_step_shows_its_runs_to_another_session(open_page):
    at = open_page("lazy")
    button(at, "Train these runs together").click().run()
    deadline = time.monotonic() + 60
    # Each run is named in the URL once its job has made it: wait until all of them are.
    while len(at.query_params.get("runs", "").split(",")) < len(progress_texts(at)) or "runs" not in at.query_params:
        assert time.monotonic() < deadline, f"the URL names {at.query_params.get('runs')!r}"
        time.sleep(0.2)
        at.run()
    other = open_link("lazy", {k: at.query_params[k] for k in ("mode", "step", "runs")})  # another session
    assert len(progress_texts(other)) == len(progress_texts(at)) > 0
    assert lab.jobs().list(other.session_state["owner"]) == [], "the link's session owns no job"


def captions(at) -> list[str]:
    return [c.value for c in at.caption]


def test_the_phase_diagram_says_whether_it_runs_on_this_machine_or_on_ray(open_page, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("DYNAMICS_LAB_RAY", raising=False)
    at = open_page("lazy")
    at.segmented_control(key="lazy:mode").set_value("Phase diagram").run()
    assert any(c.startswith("Run on: this machine") for c in captions(at)), captions(at)
    monkeypatch.setenv("DYNAMICS_LAB_RAY", "10.0.0.5:6379")
    at.run()
    assert any(c.startswith("Run on: Ray at 10.0.0.5:6379") for c in captions(at)), captions(at)


def test_a_running_sweep_lists_its_widths_and_cancel_stops_it_keeping_nothing_half_made(open_page, monkeypatch):
    import dataclasses

    import engine.lazy

    original = engine.lazy.sweep_job

    def endless(ctx, store, experiment, *grid, **options):  # the page's sweep, with steps no test waits for
        train = dataclasses.replace(experiment.train, steps=10_000_000, checkpoint_every=10_000_000,
                                    eval_every=1_000_000)
        return original(ctx, store, dataclasses.replace(experiment, train=train), *grid, **options)

    monkeypatch.setattr(engine.lazy, "sweep_job", endless)
    at = open_page("lazy")
    at.segmented_control(key="lazy:mode").set_value("Phase diagram").run()
    at.text_input(key="phase:alphas").set_value("1, 10")
    at.text_input(key="phase:widths").set_value("8")
    at.run()
    button(at, "Run the sweep").click().run()
    deadline = time.monotonic() + 120
    while not any(c.startswith("Widths: 8 to do") for c in captions(at)):
        assert time.monotonic() < deadline, captions(at)
        time.sleep(0.2)
        at.run()
    button(at, "Cancel").click().run()
    states = wait_for_jobs(at)
    assert [s.status for s in states] == ["cancelled"], [(s.status, s.error) for s in states]
    assert any("run it again to resume" in i.value for i in at.info), [i.value for i in at.info]
    assert lab.store().list() == []


def test_a_reloaded_page_shows_the_lesson_steps_saved_results(open_page):
    at = open_page("lazy")
    button(at, "Train these runs together").click().run()
    wait_for_jobs(at)
    trained = titles(at)
    fresh = open_page("lazy")  # a reload: a new session, which follows no job
    assert lab.jobs().list(fresh.session_state["owner"]) == []
    assert titles(fresh) == trained, "the step's saved results are not shown as they were"
    assert any("Trained earlier" in c for c in captions(fresh)), captions(fresh)


def test_saved_results_belong_to_their_settings(open_page):
    at = open_page("lazy")
    button(at, "Train these runs together").click().run()
    wait_for_jobs(at)
    fresh = open_page("lazy")
    fresh.select_slider(key="lazy:knob:lazy-1-output-scale").set_value("100").run()  # another last run
    assert not fresh.exception, fresh.exception
    assert not plotly_specs(fresh), "runs of other settings shown as this step's results"
