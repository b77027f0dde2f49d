"""The pages, run headless with AppTest: each renders, Train trains live, Runs lists the run."""
import time

import pytest
from apptest_helpers import PAGES, button, job_state, plotly_specs, poll, start_training

import app_pages.lab as lab


@pytest.mark.parametrize("name", list(PAGES))
def test_every_page_runs_without_an_exception(open_page, name):
    at = open_page(name)
    assert not at.exception, at.exception
    assert at.title, "the page drew no title"


def test_home_links_to_the_built_pages(open_page):
    at = open_page("home")
    links = [el.proto.page for el in at.get("page_link")]
    assert any(link.endswith("train.py") or link.endswith("train") for link in links), links
    assert any(link.endswith("runs.py") or link.endswith("runs") for link in links), links


def test_training_runs_to_the_end_and_shows_the_curves(open_page):
    at = open_page("train")
    assert not plotly_specs(at), "no chart before a job"
    start_training(at, steps=200, eval_every=20)
    assert job_state(at) is not None, "Start made no job"
    assert button(at, "Stop").disabled is False or job_state(at).done

    state = poll(at, lambda s: s.done)
    at.run()
    assert not at.exception, at.exception
    assert state.status == "done", (state.status, state.error)
    assert state.result["status"] == "done" and state.result["step"] == 200, state.result

    specs = plotly_specs(at)
    assert len(specs) == 2, "expected the training curves and the prediction view"
    assert all(spec["data"] for spec in specs), "a chart has no traces"
    assert at.success, "no success message after training"
    assert button(at, "Start").disabled is False
    assert button(at, "Stop").disabled is True


def test_watching_a_run_draws_its_sharpness_and_lazy_measures(open_page):
    at = open_page("train")
    at.number_input(key="setting:watch.sharpness_every").set_value(20)
    at.checkbox(key="setting:watch.lazy").check()
    start_training(at, steps=60, eval_every=20)
    poll(at, lambda s: s.done)
    at.run()
    titles = [spec["layout"].get("title", {}).get("text") for spec in plotly_specs(at)]
    assert "Sharpness (top Hessian eigenvalue)" in titles and "Lazy or rich" in titles, titles


def test_stop_ends_a_live_training_early(open_page):
    at = open_page("train")
    start_training(at, steps=100_000, eval_every=50)
    # The live panel draws partial curves while the job still runs.
    state = poll(at, lambda s: s.done or (plotly_specs(at) and s.partial.get("step", 0) > 0))
    assert not state.done, f"a 100000-step training ended early: {state.status} {state.error}"
    assert button(at, "Start").disabled is True
    button(at, "Stop").click()
    state = poll(at, lambda s: s.done, timeout=30)
    at.run()
    assert state.status == "cancelled", (state.status, state.error)
    assert 0 < state.result["step"] < 100_000
    assert any("Stopped at step" in info.value for info in at.info), [i.value for i in at.info]
    assert button(at, "Start").disabled is False


def test_an_invalid_setting_shows_an_error_and_disables_start(open_page):
    at = open_page("train")
    assert button(at, "Start").disabled is False
    at.number_input(key="setting:model.width").set_value(0).run()
    assert not at.exception, at.exception
    assert at.error, "width 0 showed no error"
    assert button(at, "Start").disabled is True


def test_a_finished_run_appears_on_the_runs_page(open_page):
    at = open_page("runs")
    assert any("No runs yet" in info.value for info in at.info)

    at.switch_page("app_pages/train.py").run()
    start_training(at, steps=100, eval_every=20, name="apptest run")
    state = poll(at, lambda s: s.done)
    assert state.status == "done", (state.status, state.error)
    run_id = state.result["run_id"]

    at.switch_page("app_pages/runs.py").run()
    assert not at.exception, at.exception
    chooser = at.multiselect[0]
    assert run_id in chooser.options or any("apptest run" in o for o in chooser.options), chooser.options
    chooser.set_value([run_id]).run()
    assert not at.exception, at.exception
    assert any(sub.value == "apptest run" for sub in at.subheader)
    specs = plotly_specs(at)
    assert len(specs) == 2 and all(spec["data"] for spec in specs)


def test_a_preset_trains_its_runs_and_links_to_its_lens(open_page, monkeypatch):
    import engine.presets as presets
    from engine.experiment import Experiment

    quick = presets.Preset("quick", "Quick preset", "landscape", "Two tiny runs.",
                           [presets.PresetRun(f"run {i}", Experiment.from_flat(
                               {"data": "moons", "data.n": "100", "model.width": "4", "train.steps": "20",
                                "model.seed": str(i)})[0]) for i in range(2)])
    monkeypatch.setattr(presets, "all_presets", lambda: [quick])
    at = open_page("train")
    button(at, "Train these runs").click().run()
    deadline = time.monotonic() + 60
    while not [link for link in at.get("page_link") if "Loss landscape" in link.proto.label]:
        assert time.monotonic() < deadline, "the preset's runs did not finish"
        time.sleep(0.3)
        at.run()
        assert not at.exception, at.exception
    assert len(lab.store().list()) == 2


def test_adversarial_training_settings_show_for_classes_only_and_check_their_values(open_page):
    at = open_page("train")
    at.text_input(key="setting:train.adversarial_eps").set_value("-1").run()
    assert "Adversarial eps must be 0 (off) or a positive number." in [e.value for e in at.error]
    assert button(at, "Start").disabled is True
    at.selectbox(key="setting:data").set_value("wave").run()
    assert not at.exception, at.exception
    keys = {w.key for w in at.sidebar.text_input} | {w.key for w in at.sidebar.number_input}
    assert not keys & {"setting:train.adversarial_eps", "setting:train.adversarial_steps"}, keys
    assert button(at, "Start").disabled is False
