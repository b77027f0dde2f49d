"""The overview in a real browser while a run trains: its polls (reruns of the grid alone) move
it to newer checkpoints without fading the panels that wait for their redraw, and the checkpoint
widgets, which also rerun only the grid, choose what the panels show."""
import re

from test_browser import LONG_RUN, open_page, wait_for_charts, wait_for_progress, wait_idle, waiting_element

# The checkpoint the followed run's caption names ("name · step 1,200 · training"), or -1.
CAPTION_STEP = """() => {
    const caption = [...document.querySelectorAll("[data-testid='stCaptionContainer']")]
        .map(el => el.innerText).find(text => text.includes("· training")) || "";
    const step = caption.match(/step ([\\d,]+)/);
    return step ? parseInt(step[1].replaceAll(",", "")) : -1;
}"""


def follow_a_training(page, url: str) -> None:
    """Start a run far too long to finish on the Train page and open the overview on it."""
    open_page(page, url, f"/train?train.steps={LONG_RUN}&train.checkpoint_every=200")
    page.get_by_role("button", name="Start").click()
    wait_for_progress(page, r"running · step [1-9]")
    page.locator("[data-testid='stSidebarNavLink']", has_text="Overview").click()
    page.wait_for_selector("text=· training", timeout=60_000)
    wait_for_charts(page, 5)


def stop_the_training(page) -> None:
    page.locator("[data-testid='stSidebarNavLink']", has_text="Train").click()
    page.get_by_role("button", name="Stop").click()
    page.wait_for_selector("text=the run is saved", timeout=60_000)


def lens_link_steps(page) -> set[str]:
    """The checkpoints the panels' "Open the lens" links name."""
    hrefs = page.locator("[data-testid='stPageLink'] a").evaluate_all("links => links.map(a => a.href)")
    return {m.group(1) for href in hrefs if (m := re.search(r"[?&]step=(\d+)", href))}


def test_the_overview_polls_move_it_on_and_its_panels_never_fade(page, fresh_app_url):
    follow_a_training(page, fresh_app_url)
    first = page.evaluate(CAPTION_STEP)
    assert first >= 0
    page.wait_for_function(f"() => ({CAPTION_STEP})() > {first}", timeout=120_000)
    # Streamlit fades a stale element from half a second on (opacity 0.33, over 1 s): in the
    # grid a waiting element keeps full opacity, with no fade at all.
    waiting = page.wait_for_function(waiting_element("overview-grid"), timeout=120_000, polling="raf").json_value()
    assert waiting == {"opacity": "1", "fade": "0s"}, waiting
    assert page.locator("[data-testid='stException']").count() == 0
    stop_the_training(page)


def test_a_checkpoint_chosen_while_it_trains_is_the_one_the_panels_show(page, fresh_app_url):
    follow_a_training(page, fresh_app_url)
    page.get_by_text("Follow the newest checkpoint").click()
    slider = page.get_by_role("slider", name="Checkpoint (step)")
    slider.wait_for()
    wait_idle(page)
    slider.focus()
    slider.press("Home")  # the first checkpoint, step 0
    page.wait_for_function("() => /[?&]step=0(&|$)/.test(window.location.href)", timeout=60_000)
    page.wait_for_function(
        """() => [...document.querySelectorAll("[data-testid='stPageLink'] a")]
                 .every(a => /[?&]step=0(&|$)/.test(a.href))""", timeout=60_000)
    assert lens_link_steps(page) == {"0"}
    assert page.locator("[data-testid='stException']").count() == 0
    stop_the_training(page)
