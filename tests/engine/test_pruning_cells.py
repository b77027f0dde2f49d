"""A run's pruning sweep and its lottery rounds as cells of the sweep mechanism: the same
numbers as the in-process `pruning.sweep` and `pruning.iterative_magnitude`, a run per cell,
cancelling and resuming, and a chain whose failed round stops the rounds after it.

(On Ray: test_pruning_cells_ray.py.)
"""
import dataclasses

import numpy as np
import pytest

from engine import pruning, recipes
from engine.experiment import Experiment, load_dataset, load_model, train_job
from engine.models import ModelSpec
from engine.pruning_cells import (
    cells_store,
    compute_round,
    lottery_cells,
    lottery_job,
    lottery_key,
    lottery_kind,
    lottery_needs,
    pruning_cells,
    pruning_key,
    pruning_kind,
    pruning_sweep_job,
)
from engine.store import RunStore
from engine.sweep import STAGING_FOLDER, QuietContext, Sweep, cell_run_id, run_sweep
from engine.train import TrainConfig

METHODS, SPARSITIES = ["magnitude", "random", "taylor"], [0.5, 0.8]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A trained classifier's run, in a store of its own for the module."""
    store = RunStore(tmp_path_factory.mktemp("source"))
    experiment = Experiment("moons", {"n": 200}, ModelSpec(width=8),
                            TrainConfig(steps=60, eval_every=20, checkpoint_every=20))
    return store.root, train_job(QuietContext(), experiment, store=store, device="cpu")["run_id"]


@pytest.fixture
def run_store(trained_run, tmp_path):
    """A fresh copy of the source run's store."""
    import shutil

    root, _ = trained_run
    shutil.copytree(root, tmp_path / "runs")
    return RunStore(tmp_path / "runs")


def in_process_sweep(store, run_id, finetune_steps, at_init=False):
    """The pruning sweep as one process computes it (`pruning.sweep`, set up as the recipe did)."""
    model, reference, data = recipes._to_prune(store, run_id, at_init, finetune_steps)
    settings = pruning.SweepSettings(finetune_steps=finetune_steps,
                                     train_config=recipes._finetune_config(store, run_id, finetune_steps))
    return pruning.sweep(model, data, METHODS, SPARSITIES, settings, device="cpu", reference=reference)


def assert_same_sweep(got, expected):
    for field in dataclasses.fields(expected):
        if field.name.endswith("seconds") or field.name == "settings":
            continue
        a, b = getattr(got, field.name), getattr(expected, field.name)
        if isinstance(b, dict):
            assert a.keys() == b.keys(), field.name
            for name in b:
                np.testing.assert_array_equal(a[name], b[name], err_msg=f"{field.name} {name}")
        else:
            np.testing.assert_array_equal(a, b, err_msg=field.name)
    assert {k: v for k, v in got.settings.items() if k != "at_init"} == expected.settings


# ---------------------------------------------------------------- pruning sweep


@pytest.mark.parametrize("at_init", [False, True])
def test_a_pruning_sweep_in_cells_equals_the_sweep_in_one_process(run_store, trained_run, one_thread, at_init):
    run_id = trained_run[1]
    got = pruning_sweep_job(None, run_store, run_id, METHODS, SPARSITIES, finetune_steps=5, at_init=at_init,
                            device="cpu")
    assert_same_sweep(got, in_process_sweep(run_store, run_id, 5, at_init))
    assert got.settings["at_init"] is at_init


def test_each_cell_is_a_run_holding_the_pruned_model_in_the_cells_own_store(run_store, trained_run, one_thread):
    run_id = trained_run[1]
    cells = pruning_cells(run_id, ["magnitude"], [0.8], finetune_steps=5)
    sweep = pruning_sweep_job(None, run_store, run_id, ["magnitude"], [0.8], finetune_steps=5, device="cpu")
    cell_run, runs = cell_run_id(pruning_key(cells[0])), cells_store(run_store)
    pruned = load_model(runs, cell_run)  # opens like any run: the pruned weights are zeros
    assert pruning.sparsity_of(pruned)["total"] == pytest.approx(0.8, abs=0.01)
    data = load_dataset(runs, cell_run)
    assert pruning.evaluate(pruned, data.x_test, data.y_test, "ce")[0] == sweep.accuracy[0, 0]
    assert [r.id for r in runs.list()] == [cell_run] and runs.settings(cell_run)["status"] == "done"
    assert [r.id for r in run_store.list()] == [run_id]  # the lab's run list shows the trained run only


def test_deleting_a_run_deletes_the_runs_of_its_cells_and_no_others(run_store, trained_run, one_thread):
    run_id = trained_run[1]
    pruning_sweep_job(None, run_store, run_id, ["magnitude"], [0.8], finetune_steps=0, device="cpu")
    other = run_store.create("another run", {})
    cells_store(run_store).create("a cell of another run", {"cell_of": {"run": other}})
    run_store.delete(run_id)
    cells = cells_store(run_store)
    assert [cells.settings(r.id)["cell_of"]["run"] for r in cells.list(damaged=True)] == [other]


class CancelOnceACellIsStored(QuietContext):
    """The driver's context: cancel as soon as one cell's run is in the store."""

    def __init__(self, store, first: str):
        super().__init__()
        self.first = store.root / first

    @property
    def cancelled(self) -> bool:
        return self.first.exists()


def test_a_cancelled_pruning_sweep_keeps_its_finished_cells_and_a_rerun_computes_only_the_rest(run_store, trained_run,
                                                                                                one_thread):
    """The second cell waits until the sweep is cancelled, then starts fine-tuning, which stops
    at once: it is cancelled, not half-stored; the rerun finds the first and computes the others."""
    run_id = trained_run[1]
    sweep = Sweep(pruning_cells(run_id, METHODS[:1], SPARSITIES, finetune_steps=5), kind=pruning_kind())
    first = cell_run_id(sweep.keys[0])
    runs = cells_store(run_store)

    def cell(settings, root, device, ctx=None):
        if pruning_key(settings) != sweep.keys[0]:
            assert ctx.stop.wait(timeout=120)  # the cancel
        return pruning_kind().compute(settings, root, device, ctx)

    record = run_sweep(sweep, run_store, device="cpu", ctx=CancelOnceACellIsStored(runs, first), cell_fn=cell)
    assert [r.status for r in record.results] == ["done", "cancelled"]
    assert [r.id for r in runs.list()] == [first]
    assert [p for p in (run_store.root / STAGING_FOLDER).iterdir() if p.is_dir()] == []
    again = run_sweep(sweep, run_store, device="cpu")
    assert [(r.status, r.trained) for r in again.results] == [("done", False), ("done", True)]


def test_bad_cells_are_refused_with_a_sentence_before_any_work(run_store, trained_run):
    with pytest.raises(ValueError, match="pruned at initialisation must be trained"):
        pruning_sweep_job(None, run_store, trained_run[1], ["magnitude"], [0.5], finetune_steps=0, at_init=True)
    with pytest.raises(ValueError, match="Unknown pruning method 'nope'"):
        pruning_sweep_job(None, run_store, trained_run[1], ["nope"], [0.5])
    assert run_store.list()[0].id == trained_run[1] and cells_store(run_store).list() == []


# ---------------------------------------------------------------- lottery rounds

ROUNDS = dict(rounds=2, rate=0.3, steps=20, rewind_step=5)


def test_lottery_rounds_in_cells_equal_iterative_magnitude_in_one_process(run_store, trained_run, one_thread):
    run_id = trained_run[1]
    config = Experiment.from_dict(run_store.settings(run_id)).train
    config = dataclasses.replace(config, steps=20, eval_every=20, checkpoint_every=20)
    model, data = load_model(run_store, run_id, step=0), load_dataset(run_store, run_id)
    alone, _ = pruning.iterative_magnitude(model, data, 2, 0.3, 5, config, device="cpu")
    got = lottery_job(None, run_store, run_id, **ROUNDS, device="cpu")
    for name in ("density", "ticket_accuracy", "ticket_loss", "control_accuracy", "control_loss"):
        np.testing.assert_array_equal(getattr(got, name), getattr(alone, name), err_msg=name)
    assert got.settings == alone.settings
    assert len(cells_store(run_store).list()) == 5  # round 0, and each round's ticket and control


def test_a_round_needs_the_ticket_before_it_and_its_control_only_that():
    cells = lottery_cells("run", 2, control=True)  # ticket 0, ticket 1, control 1, ticket 2, control 2
    keys = [lottery_key(c) for c in cells]
    assert [lottery_needs(c) for c in cells] == [[], [keys[0]], [keys[0]], [keys[0], keys[1]], [keys[1]]]


def test_round_zero_is_the_same_cell_whatever_the_rate_and_a_ticket_whatever_the_controls_seed():
    one, other = lottery_cells("run", 1, rate=0.2), lottery_cells("run", 1, rate=0.5, seed=3)
    assert lottery_key(one[0]) == lottery_key(other[0]) and lottery_key(one[1]) != lottery_key(other[1])
    assert lottery_key(one[1]) == lottery_key(lottery_cells("run", 1, rate=0.2, seed=3)[1])


def test_more_rounds_resume_from_the_finished_ones(run_store, trained_run, one_thread):
    run_id = trained_run[1]
    short = Sweep(lottery_cells(run_id, 1, 0.3, 20), kind=lottery_kind())
    run_sweep(short, run_store, device="cpu")
    longer = run_sweep(Sweep(lottery_cells(run_id, 2, 0.3, 20), kind=lottery_kind()), run_store, device="cpu")
    assert [r.trained for r in longer.results] == [False, False, False, True, True]


def test_a_failed_round_fails_the_rounds_after_it_with_a_sentence(run_store, trained_run, one_thread):
    run_id = trained_run[1]
    sweep = Sweep(lottery_cells(run_id, 2, 0.3, 20), kind=lottery_kind())

    def round_one_fails(settings, root, device, ctx=None):
        if settings["lottery.round"] == "1" and settings["lottery.network"] == "ticket":
            raise RuntimeError("the worker ran out of memory")
        return compute_round(settings, root, device, ctx)

    record = run_sweep(sweep, run_store, device="cpu", cell_fn=round_one_fails)
    assert [r.status for r in record.results] == ["done", "failed", "done", "failed", "failed"]
    assert record.results[3].message == record.results[4].message == (
        "A cell it needs ended failed: The cell's worker failed: the worker ran out of memory")
