"""The Runs page with damaged and interrupted runs in the store: it lists the good runs,
names each bad one with its reason, and never raises."""
from apptest_helpers import small_run

import app_pages.lab as lab


def damage(run_id: str, how: str) -> None:
    """Break a stored run: cut its settings short, empty its checkpoints, or fake its weights."""
    folder = lab.store().root / run_id
    if how == "truncated settings":
        (folder / "settings.json").write_bytes((folder / "settings.json").read_bytes()[:30])
    elif how == "no checkpoints":
        for path in (folder / "checkpoints").iterdir():
            path.unlink()
    elif how == "not safetensors":
        for path in (folder / "checkpoints").iterdir():
            path.write_text("these are not weights")


def warnings_text(at) -> str:
    return " ".join(w.value for w in at.warning)


def test_damaged_runs_are_named_with_their_reasons_and_the_rest_listed(open_page):
    small_run(name="good run")
    bad = {how: small_run(seed=i + 1, steps=20, name=how)
           for i, how in enumerate(("truncated settings", "no checkpoints", "not safetensors"))}
    for how, run_id in bad.items():
        damage(run_id, how)
    at = open_page("runs")
    assert not at.exception, at.exception
    [listed] = at.multiselect[0].options
    assert "good run" in listed
    text = warnings_text(at)
    assert all(run_id in text for run_id in bad.values()), text
    assert "cannot be read" in text and "no checkpoints" in text and "not a safetensors file" in text


def test_a_good_run_opens_beside_damaged_ones(open_page):
    good = small_run(name="good run")
    damage(small_run(seed=1, steps=20, name="broken"), "not safetensors")
    at = open_page("runs")
    at.multiselect[0].set_value([good]).run()
    assert not at.exception, at.exception
    assert any(sub.value == "good run" for sub in at.subheader)


def test_a_damaged_run_can_be_deleted_from_the_page(open_page):
    broken = small_run(name="broken")
    damage(broken, "truncated settings")
    at = open_page("runs")
    [delete] = [b for b in at.button if b.key == f"delete-damaged-{broken}"]
    delete.click().run()
    assert not at.exception, at.exception
    assert not lab.store().exists(broken) and broken not in warnings_text(at)


def test_an_interrupted_run_opens_with_a_warning_and_its_last_checkpoint(open_page):
    run_id = small_run(name="cut off")
    record = lab.store().root / run_id / "settings.json"
    record.write_text(record.read_text().replace('"status": "done"', '"status": "running"'))
    at = open_page("runs")  # no process holds the run's writer lock: its writer is gone
    at.multiselect[0].set_value([run_id]).run()
    assert not at.exception, at.exception
    assert "interrupted" in warnings_text(at) and "step 60" in warnings_text(at)
    assert len(at.get("plotly_chart")) == 2, "the curves and the last checkpoint's predictions"
