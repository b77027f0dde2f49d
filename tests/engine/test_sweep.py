"""Sweeps on the local backend: cells, the stored record, the table, resuming, faults.

(The Ray backend's tests are in test_sweep_ray.py.)
"""
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.experiment import Experiment, train_job
from engine.store import RunStore
from engine.sweep import (
    STAGING_FOLDER,
    QuietContext,
    Sweep,
    cell_key,
    cell_run_id,
    command,
    configured_backend,
    grid,
    list_sweeps,
    make_backend,
    open_sweep,
    run_sweep,
    task_resources,
    train_cell,
    where,
)

TINY = {"data": "moons", "data.n": "100", "model.width": "4", "model.depth": "1", "train.steps": "20",
        "train.eval_every": "10", "train.checkpoint_every": "10"}
DIVERGING = {"model.init_scale": "8", "train.optimizer": "sgd", "train.lr": "90", "train.momentum": "0.99",
             "train.loss": "mse"}
REPO = Path(__file__).resolve().parents[2]


def tiny_sweep(**varied: str) -> Sweep:
    return grid(TINY | {k.replace("_", ".", 1): v for k, v in varied.items()})


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "runs")


def staged(store: RunStore) -> list[Path]:
    """The staging folders of cells (not their lock files)."""
    folder = store.root / STAGING_FOLDER
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.exists() else []


def wait_for(condition, what: str, timeout: float = 120.0) -> None:
    """Poll `condition` until it holds; the timeout is only a safety net."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"Gave up waiting for {what}.")
        time.sleep(0.05)


# ---------------------------------------------------------------- cells


def test_comma_lists_span_the_product_of_their_choices():
    sweep = grid({"data": "moons", "model.width": "16,32,64", "train.lr": "0.05,0.1"})
    assert len(sweep.cells) == 6 and sweep.varied == ["model.width", "train.lr"]
    assert {"data": "moons", "model.width": "64", "train.lr": "0.1"} in sweep.cells


def test_a_list_valued_setting_separates_its_choices_with_semicolons():
    sweep = grid({"data": "wave", "data.frequencies": "1,4;2"})
    assert [c["data.frequencies"] for c in sweep.cells] == ["1,4", "2"]


def test_a_list_valued_setting_without_semicolons_is_one_cell():
    assert grid({"data": "wave", "data.frequencies": "1,4,10"}).cells == [{"data": "wave", "data.frequencies": "1,4,10"}]


def test_lists_that_span_too_many_cells_are_refused_before_the_cells_are_made(tmp_path):
    lines = []
    widths, seeds = ",".join(map(str, range(1, 101))), ",".join(map(str, range(1000)))
    assert command([f"model.width={widths}", f"train.seed={seeds}"], store_root=tmp_path, echo=lines.append) == 2
    assert lines == ["These lists span 100,000 cells; the lab's limit is 10,000."]


def test_one_experiment_spelled_two_ways_is_one_cell():
    assert cell_key({"train.lr": "0.1"}) == cell_key({"train.lr": ".10", "model.width": "64"})


def test_the_sweep_id_does_not_depend_on_the_order_of_its_cells():
    a, b = {"model.width": "4"}, {"model.width": "8"}
    assert Sweep([a, b]).id == Sweep([b, a]).id != Sweep([a]).id


def test_every_bad_value_is_named_once_before_any_work(tmp_path):
    lines = []
    code = command(["model.width=0,4", "train.lr=x,0.1"], store_root=tmp_path, echo=lines.append)
    assert code == 2
    assert sorted(lines) == ["model.width=0: Width must be a whole number of at least 1.", "train.lr=x: 'x' is not a number."]
    assert RunStore(tmp_path).list() == []


def test_a_model_that_cannot_be_built_on_the_data_is_refused_before_any_work(tmp_path):
    lines = []
    assert command(["model.kind=mlp,cnn"], store_root=tmp_path, echo=lines.append) == 2
    assert lines == ["The cell model.kind=cnn cannot be trained: The CNN needs image-like (channels, height, width) "
                     "or signal-like (channels, length) inputs; this data has shape (2,)."]


def test_a_cuda_cell_asks_ray_for_a_gpu_and_a_cpu_cell_for_a_cpu():
    assert task_resources("cuda") == {"num_gpus": 1, "num_cpus": 1}
    assert task_resources("cuda:1")["num_gpus"] == 1
    assert task_resources("cpu") == task_resources(None) == {"num_cpus": 1}


def test_an_address_where_nothing_listens_gets_a_sentence_not_minutes_of_retries():
    pytest.importorskip("ray")
    with pytest.raises(ValueError, match="Nothing answers at 127.0.0.1:1 .*ray start --head"):
        make_backend("ray", "127.0.0.1:1")


def test_an_address_without_the_ray_backend_is_refused():
    with pytest.raises(ValueError, match="use --backend ray"):
        make_backend("local", "head:6379")


# ---------------------------------------------------------------- running


def test_each_cell_trains_as_the_plain_run_of_its_settings(store, tmp_path, one_thread):
    record = run_sweep(tiny_sweep(model_width="4,8"), store, device="cpu")
    for cell, result in zip(record.cells, record.results):
        reference = RunStore(tmp_path / "reference")
        plain = train_job(QuietContext(), Experiment.from_flat(cell)[0], store=reference, device="cpu")
        expected = reference.metrics(plain["run_id"])
        assert (result.status, result.run_id) == ("done", cell_run_id(cell_key(cell)))
        assert result.train_loss == expected["eval_train_loss"][-1]
        assert result.test_loss == expected["test_loss"][-1]
        assert result.test_accuracy == expected["test_accuracy"][-1]


def test_the_store_lists_one_finished_run_per_cell_and_keeps_no_staging(store):
    run_sweep(tiny_sweep(model_width="4,8"), store, device="cpu")
    assert sorted((r.id, r.status) for r in store.list()) == sorted(
        (cell_run_id(cell_key(c)), "done") for c in tiny_sweep(model_width="4,8").cells)
    assert staged(store) == []


def test_the_sweep_is_stored_and_can_be_reopened_and_listed(store):
    sweep = tiny_sweep(model_width="4,8")
    sweep.name = "widths"
    record = run_sweep(sweep, store, device="cpu")
    reopened = open_sweep(store, sweep.id)
    assert reopened.to_meta() == record.to_meta() and reopened.name == "widths"
    assert [s.id for s in list_sweeps(store)] == [sweep.id]


def test_the_command_writes_one_row_per_cell_with_the_varied_settings_as_columns(tmp_path):
    lines = []
    pairs = [f"{k}={v}" for k, v in TINY.items() if k != "model.width"] + ["model.width=4,8", "train.lr=0.01,0.02"]
    code = command(pairs, store_root=tmp_path / "runs", out=str(tmp_path / "out"), device="cpu", echo=lines.append)
    assert code == 0
    table = tmp_path / "out" / f"sweep-{grid(dict(p.split('=', 1) for p in pairs)).id}.csv"
    rows = list(csv.DictReader(table.open()))
    assert list(rows[0]) == ["model.width", "train.lr", "run_id", "status", "train_loss", "test_loss", "test_accuracy"]
    assert [(r["model.width"], r["train.lr"], r["status"]) for r in rows] == [
        ("4", "0.01", "done"), ("4", "0.02", "done"), ("8", "0.01", "done"), ("8", "0.02", "done")]
    assert sum(line.startswith("[") for line in lines) == 4 and "4 cells (4 done); 4 trained now" in lines[-2]


def test_python_m_engine_sweep_runs_the_command(tmp_path, capsys):
    from engine.__main__ import main

    settings = [f"{k}={v}" for k, v in TINY.items()] + ["train.lr=0.01,0.02"]
    assert main(["--store", str(tmp_path / "runs"), "sweep", *settings, "--out", str(tmp_path), "--device", "cpu",
                 "--name", "two rates"]) == 0
    assert "2 cells (2 done); 2 trained now" in capsys.readouterr().err
    assert [s.name for s in list_sweeps(RunStore(tmp_path / "runs"))] == ["two rates"]
    assert len(list(tmp_path.glob("sweep-*.csv"))) == 1


def test_a_job_context_hears_of_every_cell_at_the_start_and_as_each_ends(store):
    class Recording(QuietContext):
        reports = []

        def report(self, progress=None, message=None, **partial):
            self.reports.append((progress, [c["status"] for c in partial["cells"]]))

    run_sweep(tiny_sweep(model_width="4,8"), store, device="cpu", ctx=Recording())
    assert Recording.reports == [(0.0, ["pending", "pending"]), (0.5, ["done", "pending"]), (1.0, ["done", "done"])]


def test_a_regression_sweep_has_no_accuracy_column(tmp_path):
    pairs = ["data=wave", "data.n=100", "model.width=4,8", "model.depth=1", "train.steps=10"]
    assert command(pairs, store_root=tmp_path / "runs", out=str(tmp_path), device="cpu", echo=lambda _: None) == 0
    header = next(csv.reader(next(tmp_path.glob("sweep-*.csv")).open()))
    assert header == ["model.width", "run_id", "status", "train_loss", "test_loss"]


# ---------------------------------------------------------------- resuming and faults


def test_running_a_sweep_again_trains_only_the_cell_whose_run_was_deleted(store):
    sweep = tiny_sweep(model_width="4,8,12")
    first = run_sweep(sweep, store, device="cpu")
    store.delete(first.results[1].run_id)
    again = run_sweep(sweep, store, device="cpu")
    assert [r.trained for r in again.results] == [False, True, False]
    same = {"trained": None, "seconds": None}  # how a cell was got, not what it is
    assert [r.to_dict() | same for r in again.results] == [r.to_dict() | same for r in first.results]


def test_two_attempts_at_one_cell_at_once_make_one_run(store):
    record = run_sweep(Sweep([TINY, TINY | {"train.lr": ".010"}]), store, workers=2, device="cpu")
    assert [r.status for r in record.results] == ["done", "done"]
    assert sorted(r.trained for r in record.results) == [False, True] and len(store.list()) == 1


def test_a_diverging_cell_is_recorded_as_diverged_with_its_sentence_and_the_sweep_goes_on(store):
    sweep = Sweep([TINY, TINY | DIVERGING, TINY | {"model.width": "8"}])
    record = run_sweep(sweep, store, device="cpu")
    assert [r.status for r in record.results] == ["done", "diverged", "done"]
    assert "training diverged" in record.results[1].message
    assert store.settings(record.results[1].run_id)["status"] == "diverged"


def test_a_diverged_cell_is_a_result_and_is_not_trained_again(store):
    sweep = Sweep([TINY | DIVERGING])
    run_sweep(sweep, store, device="cpu")
    assert [r.trained for r in run_sweep(sweep, store, device="cpu").results] == [False]


def test_a_failing_cell_fails_alone_and_the_next_run_retrains_it(store):
    sweep = tiny_sweep(model_width="4,8")
    broken = cell_key(sweep.cells[0])

    def fails_once(settings, root, device, ctx=None):
        if cell_key(settings) == broken:
            raise RuntimeError("the worker ran out of memory")
        return train_cell(settings, root, device, ctx)

    record = run_sweep(sweep, store, device="cpu", cell_fn=fails_once)
    assert [r.status for r in record.results] == ["failed", "done"]
    assert "ran out of memory" in record.results[0].message and len(store.list()) == 1
    again = run_sweep(sweep, store, device="cpu")
    assert [(r.status, r.trained) for r in again.results] == [("done", True), ("done", False)]


def test_a_killed_driver_leaves_no_half_run_and_running_again_resumes(store, tmp_path):
    """A real `python -m engine sweep` is killed (SIGKILL) while its second, endless cell
    trains; the rerun finds the first cell done and trains the second afresh."""
    settings = TINY | {"train.steps": "20,10000000"}
    sweep = grid(settings)
    first, endless = (cell_run_id(cell_key(c)) for c in sweep.cells)
    log = tmp_path / "driver.log"
    driver = subprocess.Popen(
        [sys.executable, "-m", "engine", "--store", str(store.root), "sweep", "--device", "cpu",
         "--out", str(tmp_path)] + [f"{k}={v}" for k, v in settings.items()],
        cwd=REPO, env=os.environ | {"DYNAMICS_LAB_HOME": str(tmp_path)},
        stdout=subprocess.DEVNULL, stderr=log.open("w"))

    def endless_cell_trains() -> bool:
        assert driver.poll() is None, f"The sweep ended by itself: {log.read_text()}"
        return (store.root / first).exists() and any(any(p.glob("*/checkpoints/*")) for p in staged(store))

    try:
        wait_for(endless_cell_trains, "the first cell to be stored and the endless one to train")
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    assert [r.id for r in store.list()] == [first]
    left_over = staged(store)

    class CancelOnceRetraining(QuietContext):
        """Cancels the rerun as soon as the endless cell trains in a fresh staging folder."""

        @property
        def cancelled(self):
            return any(p not in left_over and any(p.glob("*/checkpoints/*")) for p in staged(store))

    record = run_sweep(sweep, store, device="cpu", ctx=CancelOnceRetraining())
    assert [(r.status, r.trained) for r in record.results] == [("done", False), ("cancelled", False)]
    assert [r.id for r in store.list()] == [first] and staged(store) == []
    assert endless not in {r.id for r in store.list()}


@pytest.mark.parametrize("environment, backend, words", [
    ({}, ("local", None), "this machine"),
    ({"RAY_ADDRESS": "10.0.0.5:6379"}, ("ray", "10.0.0.5:6379"), "Ray at 10.0.0.5:6379"),
    ({"DYNAMICS_LAB_RAY": "head:6379", "RAY_ADDRESS": "other:6379"}, ("ray", "head:6379"), "Ray at head:6379"),
])
def test_the_app_runs_sweeps_on_the_ray_cluster_its_environment_names(monkeypatch, environment, backend, words):
    for name in ("RAY_ADDRESS", "DYNAMICS_LAB_RAY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert configured_backend() == backend and where(*backend) == words


def test_cells_that_need_each_other_fail_with_a_sentence_instead_of_waiting_forever(store):
    """A kind whose cells name each other as needs (a loop): neither can start."""
    from engine.sweep import RUNS, CellKind

    sweep = tiny_sweep(model_width="4,8")
    keys = sweep.keys
    sweep.kind = CellKind(compute=RUNS.compute, key=RUNS.key, find=RUNS.find, errors=RUNS.errors,
                          needs=lambda cell: [keys[1]] if cell["model.width"] == "4" else [keys[0]])
    record = run_sweep(sweep, store, device="cpu")
    assert [r.status for r in record.results] == ["failed", "failed"] and store.list() == []
    assert "go round in a loop" in record.results[0].message


def test_a_cell_that_needs_a_cell_outside_its_sweep_is_refused_before_any_work(store):
    from engine.sweep import RUNS, CellKind

    sweep = tiny_sweep(model_width="4")
    sweep.kind = CellKind(compute=RUNS.compute, key=RUNS.key, find=RUNS.find, errors=RUNS.errors,
                          needs=lambda cell: ["elsewhere"])
    with pytest.raises(ValueError, match="needs the cell elsewhere, which is not in this sweep"):
        run_sweep(sweep, store, device="cpu")
