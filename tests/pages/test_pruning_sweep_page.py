"""The Pruning page's sweeps on the sweep mechanism: where they run, each cell's state while
they run, and a Cancel that keeps the finished cells for the next computation."""
from __future__ import annotations

import time

from apptest_helpers import button

import app_pages.lab as lab
import engine.pruning_cells
from engine.pruning_cells import cells_store, pruning_cells, pruning_key
from engine.sweep import cell_run_id


def captions(at) -> list[str]:
    return [c.value for c in at.caption]


def quick_sweep(open_page, sparsities=(0.5,)):
    """The pruning page set to one method, no fine-tuning: a sweep of seconds."""
    at = open_page("pruning")
    at.multiselect(key="pr:methods").set_value(["magnitude"]).run()
    at.multiselect(key="pr:sparsities").set_value(list(sparsities)).run()
    at.select_slider(key="pr:finetune").set_value(0).run()
    return at


def has(elements, key: str) -> bool:
    return any(element.key == key for element in elements)


def rerun_until(at, condition, what: str, timeout: float = 120.0):
    """Rerun the page (as its polling fragment would) until `condition(at)` holds."""
    deadline = time.monotonic() + timeout
    while not condition(at):
        assert not at.exception, at.exception
        assert time.monotonic() < deadline, f"gave up waiting for {what}: {captions(at)}"
        time.sleep(0.2)
        at.run()


def test_the_sweep_and_the_lottery_say_they_run_on_this_machine(open_page, stored_run, monkeypatch):
    for name in ("RAY_ADDRESS", "DYNAMICS_LAB_RAY"):
        monkeypatch.delenv(name, raising=False)
    at = quick_sweep(open_page)
    assert any(c.startswith("Run on: this machine. Each method at each sparsity") for c in captions(at))
    rerun_until(at, lambda at: has(at.toggle, "pr:lottery") and any(
        c.startswith("Run on: this machine. Each round") for c in captions(at)), "the lottery section")


def test_with_a_ray_cluster_configured_the_sweep_says_so_and_an_unreachable_one_gets_a_sentence(
        open_page, stored_run, monkeypatch):
    monkeypatch.setenv("DYNAMICS_LAB_RAY", "127.0.0.1:1")  # nothing listens there
    at = quick_sweep(open_page)
    assert any(c.startswith("Run on: Ray at 127.0.0.1:1.") for c in captions(at)), captions(at)
    rerun_until(at, lambda at: any("Nothing answers at 127.0.0.1:1" in e.value for e in at.error),
                "the job's sentence")


def test_a_running_sweep_shows_each_cell_and_cancel_keeps_the_finished_ones_for_the_next_run(
        open_page, stored_run, monkeypatch):
    """The sweep's second cell waits until the sweep is cancelled (then stops at once): the page
    shows the first done and the second to do; after Cancel, computing again finds the first
    and computes only the second."""
    original, held = engine.pruning_cells.compute_pruned, {"on": True}

    def second_cell_waits_for_cancel(settings, root, device=None, ctx=None):
        if held["on"] and settings["pruning.sparsity"] == "0.9" and settings["pruning.finetune_steps"] == "0":
            assert ctx.stop.wait(timeout=120)
        return original(settings, root, device, ctx)

    monkeypatch.setattr(engine.pruning_cells, "compute_pruned", second_cell_waits_for_cancel)
    at = quick_sweep(open_page, sparsities=(0.5, 0.9))
    rerun_until(at, lambda at: "Cells: magnitude 50% done · magnitude 90% to do" in captions(at), "the cells")
    button(at, "Cancel").click().run()
    rerun_until(at, lambda at: any("cells that had finished are kept" in i.value for i in at.info), "the cancel")
    ours = [cell_run_id(pruning_key(c)) for c in pruning_cells(stored_run, ["magnitude"], [0.5, 0.9])]
    stored = {run.id: run for run in cells_store(lab.store()).list()}  # (the page's earlier settings made some too)
    assert ours[0] in stored and ours[1] not in stored

    held["on"] = False
    reports = []
    monkeypatch.setattr(engine.pruning_cells, "compute_pruned",
                        lambda settings, *rest: reports.append(settings["pruning.sparsity"]) or original(settings,
                                                                                                         *rest))
    button(at, "Compute again").click().run()
    rerun_until(at, lambda at: has(at.select_slider, "pr:closer"), "the sweep's charts")
    assert reports == ["0.9"]  # the 50% cell was found, not computed again
    again = {run.id: run for run in cells_store(lab.store()).list()}
    assert ours[1] in again and again[ours[0]].created == stored[ours[0]].created
    assert [run.id for run in lab.store().list()] == [stored_run]  # the pickers list the trained run alone
