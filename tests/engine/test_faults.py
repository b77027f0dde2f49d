"""Faults, with real processes where it matters: a training process killed mid-run, damaged
runs on disk, and a run deleted while an analysis of it is being computed."""
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from engine import analysis, results
from engine.jobs import JobManager
from engine.status import Status
from engine.store import RunStore

ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 180  # a safety net only: each wait ends as soon as its state is reached


def wait_for(condition, what: str, process: subprocess.Popen | None = None):
    """Poll `condition()` until it returns something truthy; fail after WAIT_S seconds."""
    deadline = time.monotonic() + WAIT_S
    while not (found := condition()):
        if process is not None and process.poll() is not None:
            pytest.fail(f"the process ended ({process.returncode}) before {what}: {process.stdout.read()[-2000:]}")
        assert time.monotonic() < deadline, f"no {what} after {WAIT_S} s"
        time.sleep(0.1)
    return found


def finished_run(store: RunStore, name: str = "finished") -> str:
    run_id = store.create(name, {"dataset": "moons"})
    store.save_checkpoint(run_id, 0, {"w": torch.arange(6.0).reshape(2, 3)})
    store.save_metrics(run_id, {"train_loss": [1.0, 0.5]})
    store.finish(run_id, "done", {"steps": 10}, "Finished 10 steps.")
    return run_id


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def checkpoint_files(root: Path, besides: str) -> list[Path]:
    """The checkpoint files of every run but `besides`."""
    return [p for p in root.glob("*/checkpoints/step-*.safetensors") if p.parts[-3] != besides]


# ----- a training process killed with SIGKILL -------------------------------------------

@pytest.fixture(scope="module")
def killed_training(tmp_path_factory):
    """A store with one finished run, and one whose CLI training process was kill -9'd
    after writing at least two checkpoints. Yields (store, id of the finished run, its files)."""
    store = RunStore(tmp_path_factory.mktemp("killed") / "runs")
    other = finished_run(store)
    before = snapshot(store.root / other)
    command = [sys.executable, "-m", "engine", "--store", str(store.root), "train", "data=moons",
               "data.n=200", "model.width=8", "train.steps=10000000", "train.eval_every=1000000",
               "train.checkpoint_every=20", "--device", "cpu", "--name", "killed"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True,
                               env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        wait_for(lambda: len(checkpoint_files(store.root, besides=other)) >= 2, "two checkpoints", process)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        process.stdout.close()
    yield store, other, before


def test_a_killed_run_is_listed_interrupted_with_its_last_checkpoint(killed_training):
    store, other, _ = killed_training
    [killed] = [r for r in store.list() if r.id != other]
    steps = store.checkpoint_steps(killed.id)
    assert killed.status == Status.INTERRUPTED and killed.steps == steps[-1] >= 20
    assert f"step {steps[-1]:,}" in killed.message


def test_a_killed_runs_last_checkpoint_loads(killed_training):
    store, other, _ = killed_training
    [killed] = [r for r in store.list() if r.id != other]
    state = store.load_checkpoint(killed.id)
    assert state and all(torch.isfinite(t).all() for t in state.values())


def test_a_killed_run_leaves_the_other_runs_intact(killed_training):
    store, other, before = killed_training
    store.list()
    assert snapshot(store.root / other) == before and store.settings(other)["status"] == "done"


def test_a_killed_run_leaves_no_temporary_files_and_no_half_run(killed_training):
    store, _, _ = killed_training
    assert all(r.status != Status.DAMAGED for r in store.list(damaged=True))
    assert not list(store.root.glob("*/checkpoints/.*.tmp")) and not list(store.root.glob("*/.*.tmp"))


def test_temporary_files_of_an_interrupted_run_are_never_checkpoints_and_are_removed(tmp_path):
    store = RunStore(tmp_path)
    run_id = store.create("abandoned", {})
    store.save_checkpoint(run_id, 0, {"w": torch.zeros(2)})
    stray = store.root / run_id / "checkpoints" / ".step-00000020.safetensors.ab12.tmp"
    stray.write_bytes(b"half a checkpoint")
    assert store.checkpoint_steps(run_id) == [0]
    store._release_writer_lock(run_id)  # what the kernel does when the writer dies
    assert store.list()[0].status == Status.INTERRUPTED and not stray.exists()


def test_a_run_whose_writer_lives_stays_running_for_other_stores(tmp_path):
    writer = RunStore(tmp_path)
    run_id = writer.create("live", {})
    [listed] = RunStore(tmp_path).list()
    assert (listed.id, listed.status) == (run_id, Status.RUNNING)


def test_a_finished_run_is_never_called_interrupted(tmp_path):
    store = RunStore(tmp_path)
    run_id = finished_run(store)
    assert RunStore(tmp_path).settings(run_id)["status"] == Status.DONE


# ----- damaged runs ---------------------------------------------------------------------

@pytest.fixture
def damaged_store(tmp_path):
    """A store with one good run and three damaged ones; returns (store, {kind: run id})."""
    store = RunStore(tmp_path)
    ids = {kind: finished_run(store, kind) for kind in ("good", "truncated", "no-checkpoints", "not-safetensors")}
    settings = store.root / ids["truncated"] / "settings.json"
    settings.write_bytes(settings.read_bytes()[:40])
    for path in (store.root / ids["no-checkpoints"] / "checkpoints").iterdir():
        path.unlink()
    (store.root / ids["not-safetensors"] / "checkpoints" / "step-00000000.safetensors").write_bytes(
        b"PK\x03\x04 this is a zip file, not weights" * 10)
    return store, ids


def test_damaged_runs_are_left_out_of_the_plain_listing(damaged_store):
    store, ids = damaged_store
    assert [r.id for r in store.list()] == [ids["good"]]


@pytest.mark.parametrize("kind, reason", [("truncated", "settings .* cannot be read"),
                                          ("no-checkpoints", "has no checkpoints"),
                                          ("not-safetensors", "not a safetensors file")])
def test_each_damaged_run_is_named_with_its_reason(damaged_store, kind, reason):
    store, ids = damaged_store
    listed = {r.id: r for r in store.list(damaged=True)}
    assert listed[ids[kind]].status == Status.DAMAGED
    assert re.search(reason, listed[ids[kind]].message), listed[ids[kind]].message


def test_loading_a_checkpoint_that_is_not_safetensors_is_a_sentence(damaged_store):
    store, ids = damaged_store
    with pytest.raises(ValueError, match="checkpoint at step 0 .* cannot be read: it is not a safetensors file"):
        store.load_checkpoint(ids["not-safetensors"])


def test_a_checkpoint_cut_short_is_damaged(tmp_path):
    store = RunStore(tmp_path)
    run_id = finished_run(store)
    path = store.root / run_id / "checkpoints" / "step-00000000.safetensors"
    path.write_bytes(path.read_bytes()[:-4])
    [info] = store.list(damaged=True)
    assert info.status == Status.DAMAGED and "cut short" in info.message


# ----- a run deleted while an analysis of it is computed ---------------------------------

def test_a_run_deleted_mid_analysis_fails_the_job_with_a_sentence(tmp_path):
    store = RunStore(tmp_path)
    run_id = finished_run(store)
    started, release = threading.Event(), threading.Event()

    def slow_recipe(ctx, store, run_id, k):
        started.set()
        release.wait(WAIT_S)
        return results.Parity(np.arange(3.0), np.arange(3.0) * k)

    manager = JobManager(max_workers=1)
    job = manager.submit(analysis.cached, owner="me", kind="parity", store=store, run_id=run_id,
                         lens="parity", settings={"k": 2}, recipe=slow_recipe)
    assert started.wait(WAIT_S)
    store.delete(run_id)
    release.set()
    state = manager.wait(job, "me", timeout=WAIT_S)
    assert state.status == Status.FAILED and state.error.startswith(f"Run {run_id!r} was deleted while")
    assert not (store.root / run_id).exists()
    manager.shutdown()


def test_a_run_deleted_before_the_save_leaves_no_folder_behind(tmp_path):
    store = RunStore(tmp_path)
    run_id = finished_run(store)

    def recipe_that_deletes(ctx, store, run_id):
        store.delete(run_id)
        return results.Parity(np.arange(3.0), np.arange(3.0))

    with pytest.raises(ValueError, match="was deleted while"):
        analysis.cached(None, store, run_id, "parity", {}, recipe_that_deletes)
    assert list(store.root.iterdir()) == []
