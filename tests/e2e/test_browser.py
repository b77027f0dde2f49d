"""The app in a real browser: every page renders, and a training updates live, then finishes."""
import re

import pytest

pytestmark = pytest.mark.e2e

PAGES = {"home": "/", "train": "/train", "runs": "/runs", "overview": "/overview", "landscape": "/landscape", "ntk": "/ntk",
         "lazy": "/lazy", "geometry": "/geometry", "levelset": "/levelset", "pruning": "/pruning"}
NAV = ["Home", "Train", "Runs", "Overview", "Loss landscape", "Neural tangent kernel", "Lazy versus rich",
       "Representation geometry", "Level sets", "Pruning"]
# lens page -> how many charts it draws for a small 2-D classification run
LENS_CHARTS = {"landscape": 3, "ntk": 10, "geometry": 5, "levelset": 3, "pruning": 9}
STEP = re.compile(r"step ([\d,]+)")
# A run that cannot finish while a test watches it (hours on any machine): tests stop it.
LONG_RUN = 10_000_000


def wait_idle(page, timeout=60_000):
    """Wait until the app is drawn and its script run has finished."""
    page.wait_for_selector("[data-testid='stApp']", timeout=timeout)
    page.wait_for_selector("[data-test-script-state='notRunning']", timeout=timeout)


def wait_for_charts(page, count: int, timeout=120_000) -> None:
    """Wait until at least `count` plotly charts are on the page."""
    page.wait_for_function(
        "n => document.querySelectorAll(\"[data-testid='stPlotlyChart']\").length >= n", arg=count, timeout=timeout)


def open_lens(page, url: str, name: str) -> None:
    """Open a lens page on the stored run and wait until its analyses (jobs, polled by their
    progress bars) have drawn every chart."""
    open_page(page, url, PAGES[name])
    wait_for_charts(page, LENS_CHARTS[name])
    wait_idle(page)


def nav_labels(page) -> list[str]:
    """The page names in the sidebar navigation (without the icons' ligature text)."""
    links = page.locator("[data-testid='stSidebarNavLink']")
    return [links.nth(i).inner_text().split("\n")[-1].strip() for i in range(links.count())]


def open_page(page, app_url, path):
    page.goto(app_url + path)
    wait_idle(page)
    assert page.locator("[data-testid='stException']").count() == 0, page.locator(
        "[data-testid='stException']").first.inner_text()
    # app.py's st.navigation, not an automatic list of a pages/ folder (hence app_pages/).
    assert nav_labels(page) == NAV, nav_labels(page)


def test_a_fresh_server_serves_the_app_on_any_page_url(page, fresh_app_url):
    """The first visitor may come through a bookmark of /train, not through /.

    Until some script run calls st.navigation, Streamlit treats a `pages/` folder beside the
    main script as an old-style multipage app: /train would run pages/train.py alone, skip
    app.py, and list every file of pages/ (lab too) in the sidebar.
    """
    open_page(page, fresh_app_url, "/train")
    assert page.locator("h1").first.inner_text().strip() == "Train"


def progress_text(page) -> str:
    return page.locator("[data-testid='stProgress']").first.inner_text()


def step_of(text: str) -> int:
    match = STEP.search(text)
    return int(match.group(1).replace(",", "")) if match else -1


@pytest.mark.parametrize("name", list(PAGES))
def test_every_page_renders(page, app_url, artifacts, name):
    open_page(page, app_url, PAGES[name])
    assert page.locator("h1").first.inner_text().strip(), "no title"
    page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)


def set_steps(page, steps: int) -> None:
    """Type a step count into the sidebar and wait for the rerun that writes it into the URL."""
    field = page.get_by_label("Steps", exact=True)
    field.fill(str(steps))
    field.press("Enter")
    page.wait_for_url(re.compile(rf"train\.steps={steps}\b"))
    wait_idle(page)


def waiting_element(container_key: str) -> str:
    """A script for the first element inside `st.container(key=container_key)` that waits for a
    rerun to draw it again (Streamlit marks it stale): its opacity and the duration of its fade;
    null while none waits."""
    return f"""() => {{
        const el = document.querySelector(".st-key-{container_key} [data-stale='true']");
        if (!el) return null;
        const style = getComputedStyle(el);
        return {{opacity: style.opacity, fade: style.transitionDuration}};
    }}"""


def wait_for_progress(page, pattern: str, timeout=60_000) -> None:
    """Wait until the live progress bar's text matches the regular expression `pattern`."""
    page.wait_for_function(
        "p => new RegExp(p).test(document.querySelector(\"[data-testid='stProgress']\")?.innerText || '')",
        arg=pattern, timeout=timeout)


def test_training_updates_live_and_stops_on_request(page, app_url, artifacts):
    """A run far too long to finish during the test: it moves on by itself, its live view never
    fades while a poll redraws it, and Stop keeps it."""
    open_page(page, app_url, "/train")
    set_steps(page, LONG_RUN)
    page.get_by_role("button", name="Start").click()
    page.wait_for_selector("[data-testid='stPlotlyChart']", timeout=60_000)
    wait_for_progress(page, r"running · step [1-9]")
    first_step = step_of(progress_text(page))

    # Live: the step count moves on while the job runs, without any click.
    page.wait_for_function(
        """first => { const m = /step ([\\d,]+)/.exec(document.querySelector("[data-testid='stProgress']")?.innerText || '');
                      return m && parseInt(m[1].replace(/,/g, '')) > first; }""",
        arg=first_step, timeout=60_000)
    page.screenshot(path=str(artifacts / "train-running.png"), full_page=True)
    # Streamlit fades a stale element from half a second on; the live view keeps full opacity.
    waiting = page.wait_for_function(waiting_element("train-live"), timeout=60_000, polling="raf").json_value()
    assert waiting == {"opacity": "1", "fade": "0s"}, waiting

    page.get_by_role("button", name="Stop").click()
    page.wait_for_selector("text=the run is saved", timeout=60_000)
    wait_idle(page)
    assert "cancelled" in progress_text(page), progress_text(page)
    assert step_of(progress_text(page)) > first_step
    assert page.get_by_role("button", name="Start").is_enabled()


def test_a_short_training_finishes_and_is_listed(page, app_url, artifacts):
    open_page(page, app_url, "/train")
    set_steps(page, 300)
    page.get_by_role("button", name="Start").click()
    page.wait_for_selector("[data-testid='stAlertContentSuccess']", timeout=120_000)
    wait_idle(page)
    assert "done" in progress_text(page) and step_of(progress_text(page)) == 300, progress_text(page)
    wait_for_charts(page, 2)  # curves and predictions (plotly mounts after the script run ends)
    assert page.locator("[data-testid='stPlotlyChart']").count() == 2
    assert page.locator("[data-testid='stException']").count() == 0
    assert page.get_by_role("button", name="Start").is_enabled()
    page.screenshot(path=str(artifacts / "train-done.png"), full_page=True)

    # The finished run is in the run store: the Runs page lists it.
    open_page(page, app_url, "/runs")
    assert page.get_by_text("No runs yet").count() == 0
    page.locator("[data-testid='stMultiSelect']").first.click()
    options = page.get_by_role("option")
    labels = [options.nth(i).inner_text() for i in range(options.count())]
    done = [i for i, label in enumerate(labels) if "· done ·" in label]  # the stopped run is "cancelled"
    assert len(done) == 1, labels
    options.nth(done[0]).click()
    page.keyboard.press("Escape")
    wait_for_charts(page, 2)  # curves and predictions
    wait_idle(page)
    assert page.locator("[data-testid='stException']").count() == 0
    page.screenshot(path=str(artifacts / "runs-after-training.png"), full_page=True)


@pytest.mark.parametrize("name", list(LENS_CHARTS))
def test_lens_pages_compute_and_draw_a_stored_run(page, lens_app_url, artifacts, name):
    open_lens(page, lens_app_url, name)
    assert page.locator("[data-testid='stException']").count() == 0
    assert page.locator("[data-testid='stAlertContentError']").count() == 0
    page.screenshot(path=str(artifacts / f"{name}-run.png"), full_page=True)


def test_geometry_hovering_and_clicking_a_point_shows_its_sample(page, lens_app_url, artifacts):
    open_lens(page, lens_app_url, "geometry")
    point = page.locator("[data-testid='stPlotlyChart']").first.locator("path.point").first
    point.hover(force=True)
    label = page.locator("g.hovertext").first
    label.wait_for(timeout=10_000)
    text = label.text_content()  # an SVG group: no inner_text
    assert re.search(r"sample \d+ .*\([^,()]+, [^,()]+\)", text), text  # the text, then the point's coordinates
    point.click(force=True)  # a point selection reruns the page, which draws the picked sample
    page.wait_for_function(
        "() => [...document.querySelectorAll('.gtitle')].some(t => t.textContent.startsWith('Picked samples'))",
        timeout=60_000)
    wait_idle(page)
    assert page.locator("[data-testid='stException']").count() == 0
    page.screenshot(path=str(artifacts / "geometry-picked.png"), full_page=True)


def test_levelset_clicking_a_sample_on_the_map_picks_the_source(page, lens_app_url, artifacts):
    open_lens(page, lens_app_url, "levelset")
    before = re.search(r"pair=([\d%C,]+)", page.url).group(1).replace("%2C", ",").split(",")
    # The test samples are the map's last scatter trace, drawn on top where clicks land.
    sample = page.locator("[data-testid='stPlotlyChart']").first.locator("g.trace.scatter").last.locator("path.point")
    sample.nth(5).click(force=True)
    page.wait_for_function(f"() => !/pair={before[0]}(%2C|,)/.test(window.location.href)", timeout=60_000)
    wait_idle(page)
    after = re.search(r"pair=([\d%C,]+)", page.url).group(1).replace("%2C", ",").split(",")
    assert after[1:] == before[1:] and after[0] != before[0], (before, after)
    assert page.locator("[data-testid='stException']").count() == 0
    page.screenshot(path=str(artifacts / "levelset-picked.png"), full_page=True)


def test_the_overview_follows_a_training_run(page, fresh_app_url, artifacts):
    open_page(page, fresh_app_url, f"/train?train.steps={LONG_RUN}&train.checkpoint_every=200")
    page.get_by_role("button", name="Start").click()
    wait_for_progress(page, r"running · step [1-9]")
    page.locator("[data-testid='stSidebarNavLink']", has_text="Overview").click()
    page.wait_for_selector("text=· training", timeout=60_000)  # the run is followed while it trains
    wait_for_charts(page, 5)
    assert page.locator("[data-testid='stException']").count() == 0
    page.screenshot(path=str(artifacts / "overview-live.png"), full_page=True)
    page.locator("[data-testid='stSidebarNavLink']", has_text="Train").click()
    page.get_by_role("button", name="Stop").click()
    page.wait_for_selector("text=the run is saved", timeout=60_000)
