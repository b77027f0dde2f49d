"""Sweeps on Ray: the same numbers as the local backend, and a worker killed mid-cell; a phase
diagram's widths, a run's pruning sweep and lottery rounds, a surface's blocks of rows and the
kernel at each checkpoint as Ray tasks, equal to what this machine computes.

One local Ray (2 CPUs) serves the whole module; the sweep joins it rather than starting its own.
"""
import dataclasses
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from test_pruning_cells import (  # noqa: F401 (run_store and trained_run are fixtures)
    METHODS,
    ROUNDS,
    SPARSITIES,
    assert_same_sweep,
    in_process_sweep,
    run_store,
    trained_run,
)
from test_sweep import wait_for

from engine import distributed, landscape, ntk, pruning
from engine.experiment import Experiment, load_dataset, load_model
from engine.jobs import JobContext
from engine.landscape import random_direction
from engine.lazy import sweep_job
from engine.models import ModelSpec
from engine.pruning_cells import lottery_job, pruning_sweep_job
from engine.store import RunStore
from engine.sweep import (
    STAGING_FOLDER,
    QuietContext,
    cell_key,
    cell_run_id,
    grid,
    run_sweep,
    start_local_ray,
    train_cell,
)
from engine.train import TrainConfig

ray = pytest.importorskip("ray")

TINY = {"data": "moons", "data.n": "100", "model.width": "4,8", "model.depth": "1", "train.steps": "20",
        "train.eval_every": "10", "train.checkpoint_every": "10"}


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    start_local_ray(2)  # as a sweep starts it
    yield
    ray.shutdown()


def test_the_lab_s_own_ray_runs_cells_at_the_driver_s_priority_not_ray_s_nice_15():
    assert ray.get(ray.remote(lambda: os.nice(0)).remote()) == os.nice(0)


def test_a_cell_gives_the_same_numbers_on_ray_as_on_this_machine(tmp_path, one_thread):
    sweep = grid(TINY)
    here = run_sweep(sweep, RunStore(tmp_path / "local"), backend="local", device="cpu")
    there = run_sweep(sweep, RunStore(tmp_path / "ray"), backend="ray", device="cpu")
    assert there.backend == "Ray on this machine" and all(r.trained for r in there.results)
    assert [(r.status, r.train_loss, r.test_loss) for r in there.results] == [
        (r.status, r.train_loss, r.test_loss) for r in here.results]


def test_a_worker_killed_mid_cell_is_retried_and_leaves_one_whole_run(tmp_path):
    """The first cell to start training writes its worker's pid and waits at a gate the test
    never opens; the test kills that worker with SIGKILL, and Ray runs the cell again."""
    store = RunStore(tmp_path / "runs")
    pid_file, gate = tmp_path / "pid", tmp_path / "gate"

    class BlocksTheFirstAttempt(QuietContext):
        # Defined in the test, not the module: Ray pickles it by value for its workers.
        def report(self, progress=None, message=None, **partial):
            if "step" in partial and self.claim():  # training has begun: a run is half made
                while not gate.exists():
                    time.sleep(0.05)

        @staticmethod
        def claim() -> bool:
            """Write this worker's pid if no worker has yet (an exclusive create: both workers
            train at once, and only the one the test kills may wait at the gate)."""
            try:
                descriptor = os.open(pid_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return False
            with os.fdopen(descriptor, "w") as file:
                file.write(str(os.getpid()))
            return True

    def cell(settings, root, device, ctx=None):
        return train_cell(settings, root, device, BlocksTheFirstAttempt())

    sweep = grid(TINY)
    with ThreadPoolExecutor(1) as driver:
        running = driver.submit(run_sweep, sweep, store, backend="ray", device="cpu", cell_fn=cell)
        try:
            wait_for(lambda: pid_file.exists() and pid_file.read_text(), "a cell to start training")
            assert any((store.root / STAGING_FOLDER).glob("*/*/checkpoints/*"))  # half a run, staged...
            assert all(r.status == "done" for r in store.list())  # ...and not listed
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
            record = running.result(timeout=300)
        finally:
            gate.touch()  # never leave a worker waiting, whatever happened
    assert [r.status for r in record.results] == ["done", "done"]
    assert sorted(r.id for r in store.list()) == sorted(cell_run_id(cell_key(c)) for c in sweep.cells)
    assert [p for p in (store.root / STAGING_FOLDER).iterdir() if p.is_dir()] == []


def test_a_cancelled_ray_sweep_stops_its_endless_cell_and_lists_no_half_run(tmp_path):
    store = RunStore(tmp_path / "runs")
    staging = store.root / STAGING_FOLDER

    class CancelOnceTraining(QuietContext):
        @property
        def cancelled(self):
            return any(staging.glob("*/*/checkpoints/*"))

    sweep = grid(TINY | {"model.width": "4", "train.steps": "10000000"})
    record = run_sweep(sweep, store, backend="ray", device="cpu", ctx=CancelOnceTraining())
    assert [r.status for r in record.results] == ["cancelled"] and store.list() == []


# ---------------------------------------------------------------- a phase diagram's widths on Ray


def test_a_phase_diagram_on_ray_equals_the_one_trained_here(tmp_path, one_thread):
    experiment = Experiment("circle", {"n": 64}, ModelSpec(depth=1),
                            TrainConfig(optimizer="sgd", lr=0.05, steps=20, batch_size=16, eval_every=10,
                                        checkpoint_every=10))
    grid = ([1.0, 10.0], [4, 8], [0])
    here = sweep_job(JobContext("here", lambda *_: None), RunStore(tmp_path / "here"), experiment, *grid,
                     device="cpu")
    there = sweep_job(JobContext("there", lambda *_: None), RunStore(tmp_path / "ray"), experiment, *grid,
                      device="cpu", backend="ray")
    for name in ("weight_change", "kernel_distance", "alignment", "test_loss"):
        np.testing.assert_allclose(getattr(there, name), getattr(here, name), rtol=1e-6, err_msg=name)
    assert np.array_equal(there.run_ids, here.run_ids)  # the same cells, so the same run ids


# ---------------------------------------------------------------- a run's pruning sweep and lottery rounds on Ray


def test_a_pruning_sweep_on_ray_equals_the_sweep_in_one_process(run_store, trained_run, one_thread):  # noqa: F811
    run_id = trained_run[1]
    got = pruning_sweep_job(None, run_store, run_id, METHODS, SPARSITIES, finetune_steps=5, backend="ray", device="cpu")
    assert_same_sweep(got, in_process_sweep(run_store, run_id, 5))


def test_lottery_rounds_on_ray_equal_iterative_magnitude_in_one_process(run_store, trained_run, one_thread):  # noqa: F811
    run_id = trained_run[1]
    config = Experiment.from_dict(run_store.settings(run_id)).train
    config = dataclasses.replace(config, steps=20, eval_every=20, checkpoint_every=20)
    model, data = load_model(run_store, run_id, step=0), load_dataset(run_store, run_id)
    alone, _ = pruning.iterative_magnitude(model, data, 2, 0.3, 5, config, device="cpu")
    got = lottery_job(None, run_store, run_id, **ROUNDS, backend="ray", device="cpu")
    for name in ("density", "ticket_accuracy", "ticket_loss", "control_accuracy", "control_loss"):
        np.testing.assert_array_equal(getattr(got, name), getattr(alone, name), err_msg=name)


# ---------------------------------------------------------------- big grids in blocks


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    x, y = torch.randn(40, 2), torch.randint(0, 3, (40,))
    return model, x, y


def test_a_surface_in_blocks_of_rows_on_ray_equals_the_local_surface(classifier):
    model, x, y = classifier
    d1, d2 = random_direction(model, seed=1), random_direction(model, seed=2)
    xs, ys = np.linspace(-1, 1, 5), np.linspace(-0.5, 0.5, 7)
    here = landscape.surface(model, "ce", x, y, d1, d2, xs=xs, ys=ys)
    fractions = []
    there = distributed.surface(model, "ce", x, y, d1, d2, xs=xs, ys=ys, blocks=3, progress=fractions.append)
    assert there.loss.shape == (7, 5) and there.settings["blocks"] == 3 and fractions[-1] == 1.0
    np.testing.assert_allclose(there.loss, here.loss, rtol=1e-6)
    np.testing.assert_allclose(there.accuracy, here.accuracy)


def test_a_line_is_split_along_its_points(classifier):
    model, x, y = classifier
    d1 = random_direction(model, seed=1)
    here = landscape.surface(model, "ce", x, y, d1, xs=np.linspace(-1, 1, 9))
    there = distributed.surface(model, "ce", x, y, d1, xs=np.linspace(-1, 1, 9), blocks=2)
    np.testing.assert_allclose(there.loss, here.loss, rtol=1e-6)


def test_the_kernel_at_every_checkpoint_on_ray_equals_the_local_one(classifier):
    model, x, _ = classifier
    checkpoints = {}
    for step in (0, 10, 20):
        torch.manual_seed(step)
        checkpoints[step] = {k: v + 0.1 * torch.randn_like(v) for k, v in model.state_dict().items()}
    steps_here, here = ntk.kernel_over_checkpoints(model, checkpoints, x[:10], kind="full")
    steps_there, there = distributed.kernel_over_checkpoints(model, checkpoints, x[:10], kind="full")
    assert steps_there == steps_here == [0, 10, 20]
    torch.testing.assert_close(there, here.cpu(), rtol=1e-6, atol=1e-7)
