"""A link's run or checkpoint that the lab lacks is said, never silently replaced (AppTest)."""
from __future__ import annotations

from apptest_helpers import button, open_link, poll

import app_pages.lab as lab


def test_a_link_to_a_missing_run_says_so_and_chooses_no_other(stored_run):
    at = open_link("ntk", {"run": "no-such-run"})
    assert any("not among the finished runs" in w.value for w in at.warning), [w.value for w in at.warning]
    assert at.selectbox(key="picker:run").value is None, "another run was chosen in the link's place"


def test_a_link_to_a_missing_checkpoint_says_which_step_is_shown(stored_run):
    at = open_link("ntk", {"run": stored_run, "step": "999"})
    assert any("no checkpoint at step '999'" in w.value for w in at.warning), [w.value for w in at.warning]


def test_the_overview_says_when_the_link_names_a_missing_run(stored_run):
    at = open_link("overview", {"run": "no-such-run"})
    assert any("does not have" in w.value for w in at.warning), [w.value for w in at.warning]
    assert at.multiselect(key="overview:runs").value == []


def test_the_runs_page_says_when_the_link_names_a_missing_run(stored_run):
    at = open_link("runs", {"runs": "no-such-run"})
    assert any("no-such-run" in w.value for w in at.warning), [w.value for w in at.warning]


def test_a_levelset_link_with_a_pair_the_run_lacks_says_so(stored_run):
    at = open_link("levelset", {"run": stored_run, "pair": "0,1,99999"})
    assert any("not three test samples" in w.value for w in at.warning), [w.value for w in at.warning]


def test_a_train_link_shows_the_run_live_to_another_session_without_its_stop(lab_home):
    at = open_link("train", {"train.steps": "10000000"})  # cannot finish while the test watches
    button(at, "Start").click().run()
    poll(at, lambda s: s.partial.get("run_id") is not None and "step" in s.partial)
    at.run()
    assert "session" not in at.query_params and "job" not in at.query_params
    other = open_link("train", {k: at.query_params[k] for k in at.query_params})  # another browser
    bars = [p.proto.text for p in other.get("progress")]
    assert bars and bars[0].startswith("running · step"), bars
    assert button(other, "Stop").disabled, "the link gives the right to stop another session's run"
    assert lab.jobs().list(other.session_state["owner"]) == []
    button(at, "Stop").click()
    assert poll(at, lambda s: s.done).status == "cancelled"
