"""The Train page trains what the user chose, or nothing: a link's value that cannot be read is
shown with its sentence and keeps Start off, and every training ends in a state that says
what happened (AppTest)."""
from __future__ import annotations

import pytest
from apptest_helpers import button, job_state, open_link, poll
from streamlit.testing.v1 import AppTest

UPLOAD = "your own file"


@pytest.fixture
def train_link(lab_home):
    """train_link({"model.width": "abc"}) -> the Train page opened through a link with these settings."""
    return lambda query: open_link("train", query)


def sidebar_errors(at: AppTest) -> list[str]:
    return [e.value for e in at.sidebar.error]


@pytest.mark.parametrize("key, text, sentence", [
    ("model.width", "abc", "'abc' is not a whole number."),
    ("model.width", "1e3", "'1e3' is not a whole number."),
    ("model.depth", "1e9", "'1e9' is not a whole number."),
    ("model.bias", "maybe", "'maybe' is not true or false."),
    ("model.width", "100000", "Width above 8192 is too large for this lab."),
    ("model.depth", "1000", "Depth above 64 is too large for this lab."),
    ("model.activation", "foo", "Activation must be one of"),
    ("data", "nonexistent", "Unknown dataset 'nonexistent'."),
    ("model.colour", "red", "'model.colour' is not a setting of this lab."),
])
def test_a_link_value_that_cannot_be_read_is_said_and_keeps_start_off(train_link, key, text, sentence):
    at = train_link({key: text})
    assert any(sentence in e for e in sidebar_errors(at)), sidebar_errors(at)
    assert button(at, "Start").disabled
    assert any(sentence in e.value for e in at.main.error), "the reason is not beside Start"


def test_a_widget_shows_the_link_text_it_could_not_read(train_link):
    at = train_link({"model.width": "abc", "model.activation": "foo"})
    assert at.sidebar.text_input(key="setting:model.width").value == "abc"
    assert at.sidebar.selectbox(key="setting:model.activation").value == "foo"


def test_correcting_the_link_text_enables_start(train_link):
    at = train_link({"model.width": "abc"})
    at.sidebar.text_input(key="setting:model.width").set_value("32").run()
    assert not sidebar_errors(at), sidebar_errors(at)
    assert not button(at, "Start").disabled
    assert at.query_params["model.width"] == "32"


def test_a_link_value_the_page_has_no_field_for_can_be_dropped(train_link):
    at = train_link({"model.colour": "red"})
    button(at, "Drop these").click().run()
    assert not sidebar_errors(at), sidebar_errors(at)
    assert not button(at, "Start").disabled


def test_a_link_value_that_is_not_the_default_is_kept_not_replaced(train_link):
    at = train_link({"model.width": "16", "model.base_width": "128"})
    assert at.sidebar.number_input(key="setting:model.width").value == 16
    assert at.query_params["model.base_width"] == "128", "a setting without a field was lost"
    assert not button(at, "Start").disabled


def test_choosing_your_own_file_without_a_file_keeps_start_off_and_the_link_honest(open_page):
    at = open_page("train")
    at.sidebar.selectbox(key="setting:data").set_value(UPLOAD).run()
    assert not at.exception, at.exception
    assert button(at, "Start").disabled
    assert any("Upload a valid data file" in e.value for e in at.main.error), [e.value for e in at.main.error]
    assert at.query_params["data"] == UPLOAD, "the link says another dataset than the chosen one"


def test_a_diverging_run_ends_saying_it_diverged_at_its_step(train_link):
    at = train_link({"data": "wave", "train.optimizer": "gd", "train.lr": "50", "train.steps": "10000000"})
    button(at, "Start").click().run()
    state = poll(at, lambda s: s.done)
    at.run()
    assert state.result["status"] == "diverged", state.result
    step = state.result["step"]
    bars = [p.proto.text for p in at.get("progress")]
    assert bars and bars[0].startswith(f"diverged · step {step:,}"), bars
    assert any("diverged" in w.value for w in at.warning), [w.value for w in at.warning]


def test_a_model_over_the_parameter_limit_fails_with_its_sentence_and_no_preparing_bar(train_link):
    at = train_link({"model.width": "8192", "model.depth": "64"})
    button(at, "Start").click().run()
    state = poll(at, lambda s: s.done)
    at.run()
    assert state.status == "failed"
    assert any("parameters" in e.value for e in at.main.error), [e.value for e in at.main.error]
    assert not [p.proto.text for p in at.get("progress")], "a progress bar stayed on screen"
    assert not button(at, "Start").disabled
    assert job_state(at).status == "failed"


def test_choosing_an_offered_choice_replaces_the_link_one(train_link):
    at = train_link({"data": "nonexistent", "model.activation": "foo"})
    at.sidebar.selectbox(key="setting:data").set_value("circle").run()
    at.sidebar.selectbox(key="setting:model.activation").set_value("tanh").run()
    assert at.sidebar.selectbox(key="setting:data").value == "circle"
    assert "foo" not in at.sidebar.selectbox(key="setting:model.activation").options
    assert not sidebar_errors(at), sidebar_errors(at)
    assert not button(at, "Start").disabled
