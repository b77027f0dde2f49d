"""Sweeps on Ray: the same numbers as the local backend, and a worker killed mid-cell.

One local Ray (2 CPUs) serves the whole module; the sweep joins it rather than starting its own.
"""
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from engine.store import RunStore
from engine.sweep import STAGING_FOLDER, QuietContext, cell_key, cell_run_id, grid, run_sweep, train_cell

ray = pytest.importorskip("ray")

TINY = {"data": "moons", "data.n": "100", "model.width": "4,8", "model.depth": "1", "train.steps": "20",
        "train.eval_every": "10", "train.checkpoint_every": "10"}


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def wait_for(condition, what: str, timeout: float = 120.0) -> None:
    """Poll `condition` until it holds; the timeout is only a safety net."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"Gave up waiting for {what}.")
        time.sleep(0.05)


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
        def report(self, progress=None, message=None, **partial):
            if "step" in partial and not pid_file.exists():  # training has begun: a run is half made
                pid_file.write_text(str(os.getpid()))
                while not gate.exists():
                    time.sleep(0.05)

    def cell(settings, root, device, ctx=None):
        return train_cell(settings, root, device, BlocksTheFirstAttempt())

    sweep = grid(TINY)
    with ThreadPoolExecutor(1) as driver:
        running = driver.submit(run_sweep, sweep, store, backend="ray", device="cpu", cell_fn=cell)
        try:
            wait_for(pid_file.exists, "a cell to start training")
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
