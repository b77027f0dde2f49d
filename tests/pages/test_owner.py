"""Who may stop a run: the browser whose cookie holds the owner's secret (AppTest, with the
cookies a browser sends stubbed; tests/e2e/test_links.py has a real browser's cookie jar)."""
from __future__ import annotations

import pytest
from apptest_helpers import button, open_link, poll

import app_pages.owner as owner_module
from app_pages.owner import COOKIE, SECRET

MINE = "0123456789abcdef" * 2
THEIRS = "fedcba9876543210" * 2


def browser_sending(monkeypatch, cookies: dict) -> None:
    """The sessions opened from now on are of a browser that sends these cookies."""
    monkeypatch.setattr(owner_module, "sent_cookies", lambda: cookies)


def cookie_scripts(at) -> list[str]:
    """The documents of the page's components (the owner's cookie script is one)."""
    return [element.proto.srcdoc for element in at.get("iframe")]


def test_a_first_visit_makes_a_secret_and_has_the_browser_keep_it(lab_home):
    at = open_link("home", {})
    secret = at.session_state["owner_secret"]
    assert SECRET.fullmatch(secret), secret
    scripts = cookie_scripts(at)
    assert len(scripts) == 1 and f"{COOKIE}={secret};" in scripts[0], scripts
    assert "SameSite=Strict" in scripts[0]
    assert secret not in at.session_state["owner"], "the owner id, which jobs carry, gives the secret away"


def test_a_browser_that_sends_its_secret_is_its_owner_and_gets_no_script(monkeypatch, lab_home):
    browser_sending(monkeypatch, {COOKIE: MINE})
    at = open_link("home", {})
    assert at.session_state["owner_secret"] == MINE
    assert at.session_state["owner"] == owner_module.owner_of(MINE)
    assert cookie_scripts(at) == []


@pytest.mark.parametrize("value", ["", "abc", MINE.upper(), MINE + "0", "'; alert(1); '"])
def test_a_cookie_that_is_no_secret_of_ours_is_replaced(monkeypatch, lab_home, value):
    browser_sending(monkeypatch, {COOKIE: value})
    at = open_link("home", {})
    secret = at.session_state["owner_secret"]
    assert secret != value and SECRET.fullmatch(secret), secret
    assert len(cookie_scripts(at)) == 1


def test_the_cookie_script_takes_only_a_secret():
    with pytest.raises(ValueError, match="32 lowercase hexadecimal digits"):
        owner_module.cookie_script("'; alert(1); '")


def test_a_reload_may_stop_its_run_and_another_browser_may_not(monkeypatch, lab_home):
    browser_sending(monkeypatch, {COOKIE: MINE})
    at = open_link("train", {"train.steps": "10000000"})  # cannot finish while the test watches
    button(at, "Start").click().run()
    poll(at, lambda s: s.partial.get("run_id") is not None and "step" in s.partial)
    at.run()
    link = {k: at.query_params[k] for k in at.query_params}
    assert MINE not in str(link), "the link carries the secret"

    browser_sending(monkeypatch, {COOKIE: THEIRS})
    other = open_link("train", link)  # the link in another browser
    assert button(other, "Stop").disabled, "another browser may stop the run"

    browser_sending(monkeypatch, {COOKIE: MINE})
    reloaded = open_link("train", link)  # a new session of the same browser
    assert not button(reloaded, "Stop").disabled, "the reloaded tab may not stop its own run"
    button(reloaded, "Stop").click().run()
    assert poll(at, lambda s: s.done).status == "cancelled"
