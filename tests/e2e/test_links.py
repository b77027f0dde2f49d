"""A copied link carries settings and a run to watch, never the right to control another
browser's job: two browser contexts (two people) on one server."""
import contextlib
import re

import pytest
from test_browser import LONG_RUN, open_page, progress_text, step_of, wait_for_progress, wait_idle

pytestmark = pytest.mark.e2e


def wait_for_step_beyond(page, step: int, timeout=60_000) -> None:
    """Wait until the progress bar's step count has moved past `step` (the run goes on)."""
    page.wait_for_function(
        """first => { const m = /step ([\\d,]+)/.exec(document.querySelector("[data-testid='stProgress']")?.innerText || '');
                      return m && parseInt(m[1].replace(/,/g, '')) > first; }""",
        arg=step, timeout=timeout)


@contextlib.contextmanager
def two_browsers(browser):
    """A tab in each of two browser contexts: two cookie jars, so two people."""
    contexts = [browser.new_context(viewport={"width": 1400, "height": 900}) for _ in range(2)]
    try:
        tabs = [context.new_page() for context in contexts]
        for tab in tabs:
            tab.set_default_timeout(30_000)
        yield tabs, contexts
    finally:
        for context in contexts:
            context.close()


def start_a_long_run(page, app_url) -> None:
    """Start a run that cannot finish during the test, and wait until the URL names it."""
    open_page(page, app_url, f"/train?train.steps={LONG_RUN}")
    page.get_by_role("button", name="Start").click()
    wait_for_progress(page, r"running · step [1-9]")
    page.wait_for_url(re.compile(r"[?&]run=\w+"))


def test_a_copied_link_shows_a_run_live_but_cannot_stop_it(browser, app_url, artifacts):
    with two_browsers(browser) as ((a, b), _):
        start_a_long_run(a, app_url)
        assert not re.search(r"[?&](session|job)=", a.url), a.url

        open_page(b, app_url, a.url.removeprefix(app_url))  # A's exact address, in B's browser
        wait_for_progress(b, r"running · step [1-9]")  # B watches A's run live...
        stop = b.get_by_role("button", name="Stop")
        assert stop.is_disabled(), "B may stop A's run"  # ...but cannot stop it
        stop.click(force=True)
        b.screenshot(path=str(artifacts / "link-watcher.png"), full_page=True)
        wait_for_step_beyond(a, step_of(progress_text(a)))
        assert "running" in progress_text(a), progress_text(a)

        a.get_by_role("button", name="Stop").click()  # A stops its own run
        a.wait_for_selector("text=the run is saved", timeout=60_000)
        wait_for_progress(b, r"cancelled · step [1-9]")  # and B sees it end


def test_a_reloaded_tab_may_stop_its_run_and_a_copied_link_still_may_not(browser, app_url):
    with two_browsers(browser) as ((a, b), contexts):
        start_a_long_run(a, app_url)
        secret = {c["name"]: c["value"] for c in contexts[0].cookies()}["dynamics_lab_owner"]
        assert secret not in a.url, "the link carries the owner's secret"

        a.reload()  # a new session of the same browser
        wait_idle(a)
        wait_for_progress(a, r"running · step [1-9]")
        assert a.get_by_role("button", name="Stop").is_enabled(), "the reloaded tab may not stop its own run"

        open_page(b, app_url, a.url.removeprefix(app_url))  # the same address in another browser
        wait_for_progress(b, r"running · step [1-9]")
        assert b.get_by_role("button", name="Stop").is_disabled(), "another browser may stop the run"

        a.get_by_role("button", name="Stop").click()
        a.wait_for_selector("text=the run is saved", timeout=60_000)
        wait_for_progress(b, r"cancelled · step [1-9]")


def upload(page, name: str, text: str) -> None:
    """Give the sidebar's file uploader a file and wait for the rerun that reads it."""
    page.locator("[data-testid='stFileUploader'] input[type='file']").set_input_files(
        {"name": name, "mimeType": "text/csv", "buffer": text.encode()})


def test_an_unreadable_upload_keeps_start_off_and_the_link_says_own_data(page, app_url):
    open_page(page, app_url, "/train?data=your+own+file")
    start = page.get_by_role("button", name="Start")
    assert start.is_disabled(), "Start trains without a file"
    upload(page, "broken.csv", "x,y,label\n1,2,0\n3,oops,1\n")
    page.wait_for_selector("[data-testid='stSidebar'] [data-testid='stAlertContentError']", timeout=60_000)
    assert start.is_disabled(), "Start trains something else than the unreadable file"
    assert re.search(r"[?&]data=your(\+|%20)own(\+|%20)file", page.url), page.url

    rows = "".join(f"{i % 7},{i % 5},{i % 2}\n" for i in range(60))
    upload(page, "good.csv", "x,y,label\n" + rows)
    page.wait_for_selector("[data-testid='stSidebar'] [data-testid='stAlertContentSuccess']", timeout=60_000)
    page.wait_for_function("() => ![...document.querySelectorAll('button')].find("
                           "b => b.innerText.trim() === 'Start').disabled", timeout=60_000)
