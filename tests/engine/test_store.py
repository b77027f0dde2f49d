"""The run store: round trips, atomic writes, and refusing unsafe ids and uploads."""
import io
import math
import os
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from engine import store
from engine.status import Status
from engine.store import RunStore


@pytest.fixture
def runs(tmp_path):
    return RunStore(tmp_path / "runs")


@pytest.fixture
def run_id(runs):
    return runs.create("first run", {"dataset": "moons", "steps": 200, "lr": 0.1})


def a_state():
    return {
        "w": torch.randn(4, 3, dtype=torch.float32),
        "b": torch.randn(3, dtype=torch.float64),
        "count": torch.arange(5, dtype=torch.int64),
    }


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def test_create_list_and_settings_round_trip(runs, run_id):
    [info] = runs.list()
    assert (info.id, info.name, info.status, info.dataset, info.steps) == (run_id, "first run", "running", "moons", 200)
    assert runs.settings(run_id)["lr"] == 0.1


def test_run_ids_sort_by_time_and_are_safe(runs, run_id):
    assert store._ID_PATTERN.match(run_id) and run_id[:8].isdigit()


def test_list_is_newest_first(runs, run_id):
    second = runs.create("second", {})
    assert [r.id for r in runs.list()] == [second, run_id]


def test_checkpoint_round_trip_is_exact_for_each_dtype(runs, run_id):
    state = a_state()
    runs.save_checkpoint(run_id, 100, state)
    loaded = runs.load_checkpoint(run_id, 100)
    assert all(torch.equal(loaded[k], state[k]) and loaded[k].dtype == state[k].dtype for k in state)


def test_checkpoint_with_shared_and_strided_tensors(runs, run_id):
    base = torch.randn(4, 4)
    runs.save_checkpoint(run_id, 1, {"a": base, "a_t": base.t(), "row": base[1]})
    loaded = runs.load_checkpoint(run_id, 1)
    assert torch.equal(loaded["a_t"], base.t()) and torch.equal(loaded["row"], base[1])


def test_checkpoint_steps_sorted_and_last_loaded_by_default(runs, run_id):
    for step in (300, 0, 100):
        runs.save_checkpoint(run_id, step, {"step": torch.tensor([step])})
    assert runs.checkpoint_steps(run_id) == [0, 100, 300]
    assert runs.load_checkpoint(run_id)["step"].item() == 300


def test_missing_checkpoint_step_is_a_value_error(runs, run_id):
    runs.save_checkpoint(run_id, 10, {"x": torch.zeros(1)})
    with pytest.raises(ValueError, match="no checkpoint at step 20"):
        runs.load_checkpoint(run_id, 20)


def test_metrics_round_trip_keeps_nan_and_infinities(runs, run_id):
    runs.save_metrics(run_id, {"loss": [1.0, float("nan"), float("inf"), -float("inf")], "step": [0, 1, 2, 3]})
    loss = runs.metrics(run_id)["loss"]
    assert loss[0] == 1.0 and math.isnan(loss[1]) and loss[2:] == [math.inf, -math.inf]


def test_metrics_accept_numpy_and_tensor_values(runs, run_id):
    runs.save_metrics(run_id, {"loss": np.array([0.5, np.nan], dtype=np.float32), "acc": torch.tensor([1.0])})
    metrics = runs.metrics(run_id)
    assert metrics["loss"][0] == 0.5 and math.isnan(metrics["loss"][1]) and metrics["acc"] == [1.0]


def test_finish_updates_status_and_summary(runs, run_id):
    runs.save_checkpoint(run_id, 0, a_state())
    runs.finish(run_id, "diverged", {"steps": 57, "final_loss": float("nan")}, "The loss became NaN.")
    [info] = runs.list()
    assert (info.status, info.steps, info.message) == ("diverged", 57, "The loss became NaN.")
    assert math.isnan(info.summary["final_loss"])


def test_finish_refuses_an_unknown_status(runs, run_id):
    with pytest.raises(ValueError):
        runs.finish(run_id, "exploded")


def test_rename_changes_the_name_not_the_folder(runs, run_id):
    runs.rename(run_id, "  Résumé ✓  ")
    assert runs.settings(run_id)["name"] == "Résumé ✓"
    assert [p.name for p in runs.root.iterdir()] == [run_id]


@pytest.mark.parametrize("name", ["", "   ", "x" * 101, None])
def test_bad_names_are_refused(runs, name):
    with pytest.raises(ValueError, match="run name"):
        runs.create(name, {})


def test_settings_may_not_use_the_stores_own_keys(runs):
    with pytest.raises(ValueError, match="status"):
        runs.create("run", {"status": "done"})


def test_delete_removes_the_run(runs, run_id):
    runs.save_checkpoint(run_id, 1, {"x": torch.zeros(1)})
    runs.delete(run_id)
    assert runs.list() == [] and list(runs.root.iterdir()) == []


@pytest.mark.parametrize("bad", ["../x", "/etc", "a/b", "", "..", "a..b", ".hidden", "x\\y"])
def test_bad_run_ids_are_refused(runs, bad):
    with pytest.raises(ValueError, match="not a valid run id"):
        runs.settings(bad)


def test_unknown_run_id_is_a_value_error_with_a_sentence(runs):
    with pytest.raises(ValueError, match="No run named"):
        runs.metrics("20260101-000000-abcdef")


def test_half_written_files_do_not_show_in_listings(runs, run_id):
    (runs.root / run_id / ".settings.json.x1y2.tmp").write_text('{"name": "half')
    (runs.root / ".import-abc").mkdir()
    half_made = runs.root / "20990101-000000-aaaaaa"
    half_made.mkdir()
    (half_made / ".settings.json.zz.tmp").write_text("{")
    assert [r.id for r in runs.list()] == [run_id]


def test_a_broken_settings_file_is_skipped(runs, run_id):
    broken = runs.root / "20990101-000000-bbbbbb"
    broken.mkdir()
    (broken / "settings.json").write_text("not json")
    assert [r.id for r in runs.list()] == [run_id]


def test_writes_leave_no_temporary_files(runs, run_id):
    runs.save_metrics(run_id, {"loss": [1.0]})
    runs.save_checkpoint(run_id, 1, a_state())
    runs.finish(run_id, "done")
    assert not [p for p in files_under(runs.root) if p.name.endswith(".tmp")]


def test_export_then_import_reproduces_the_run(runs, run_id):
    state = a_state()
    runs.save_checkpoint(run_id, 0, state)
    runs.save_checkpoint(run_id, 50, {k: v * 2 for k, v in state.items()})
    runs.save_metrics(run_id, {"loss": [2.0, float("nan")]})
    copy = runs.import_zip(runs.export_zip(run_id), name="copy")
    assert copy != run_id and runs.settings(copy)["name"] == "copy"
    assert runs.checkpoint_steps(copy) == [0, 50]
    loaded = runs.load_checkpoint(copy, 50)
    assert all(torch.equal(loaded[k], state[k] * 2) for k in state)
    assert runs.metrics(copy)["loss"][0] == 2.0 and math.isnan(runs.metrics(copy)["loss"][1])


def a_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


@pytest.mark.parametrize("evil", ["../evil", "/tmp/evil", "checkpoints/../../evil", "notes.txt",
                                  "checkpoints/step-00000001.safetensors/../../x"])
def test_malicious_zip_is_refused_and_writes_nothing(runs, run_id, tmp_path, evil):
    good = runs.export_zip(run_id)
    with zipfile.ZipFile(io.BytesIO(good)) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    before = files_under(tmp_path)
    with pytest.raises(ValueError, match="refusing"):
        runs.import_zip(a_zip({**members, evil: b"gotcha"}))
    assert files_under(tmp_path) == before and [r.id for r in runs.list()] == [run_id]


def test_a_zip_with_a_broken_checkpoint_is_refused(runs, run_id):
    settings = (runs.root / run_id / "settings.json").read_bytes()
    with pytest.raises(ValueError, match="cannot be read"):
        runs.import_zip(a_zip({"settings.json": settings, "checkpoints/step-00000001.safetensors": b"junk"}))


def test_not_a_zip_is_refused(runs):
    with pytest.raises(ValueError, match="not a zip"):
        runs.import_zip(b"hello")


def test_artifact_round_trip(runs, run_id):
    arrays = {"loss": np.array([[1.0, np.nan]]), "xs": np.arange(3)}
    runs.save_artifact(run_id, "landscape-step100", arrays, {"grid": 3, "scale": float("inf")})
    loaded, meta = runs.load_artifact(run_id, "landscape-step100")
    assert np.array_equal(loaded["loss"], arrays["loss"], equal_nan=True) and np.array_equal(loaded["xs"], arrays["xs"])
    assert meta == {"grid": 3, "scale": math.inf}


def test_missing_artifact_is_none(runs, run_id):
    assert runs.load_artifact(run_id, "nothing-here") is None


@pytest.mark.parametrize("bad", ["../x", "a/b", "..", ""])
def test_bad_artifact_keys_are_refused(runs, run_id, bad):
    with pytest.raises(ValueError, match="not a valid artifact key"):
        runs.save_artifact(run_id, bad, {"x": np.zeros(1)}, {})


def test_object_arrays_are_refused(runs, run_id):
    with pytest.raises(ValueError, match="Python objects"):
        runs.save_artifact(run_id, "objects", {"x": np.array([{}, None], dtype=object)}, {})


def test_threads_saving_checkpoints_of_different_runs_do_not_interfere(runs):
    ids = [runs.create(f"run {i}", {}) for i in range(4)]

    def save(run_id, value):
        for step in range(10):
            runs.save_checkpoint(run_id, step, {"x": torch.full((256,), float(value))})

    threads = [threading.Thread(target=save, args=(run_id, i)) for i, run_id in enumerate(ids)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(runs.load_checkpoint(run_id, 9)["x"][0].item() == i for i, run_id in enumerate(ids))
    assert all(runs.checkpoint_steps(run_id) == list(range(10)) for run_id in ids)


def test_env_var_moves_the_root(monkeypatch, tmp_path):
    monkeypatch.setenv(store.ENV_VAR, str(tmp_path / "lab"))
    assert RunStore().root == (tmp_path / "lab" / "runs").resolve()


def test_default_root_is_in_the_home_folder(monkeypatch):
    monkeypatch.delenv(store.ENV_VAR, raising=False)
    assert store.default_root() == Path.home() / ".dynamics-lab" / "runs"


# ----- sweeps ---------------------------------------------------------------------------


def test_sweep_round_trip_keeps_numbers_and_text(runs):
    arrays = {"loss": np.array([[0.5, np.nan]]), "run_ids": np.array([["a-run", ""]])}
    runs.save_sweep("sweep-1", arrays, {"alphas": [1.0, 10.0]})
    loaded, meta = runs.load_sweep("sweep-1")
    assert np.array_equal(loaded["loss"], arrays["loss"], equal_nan=True)
    assert loaded["run_ids"].tolist() == [["a-run", ""]] and meta == {"alphas": [1.0, 10.0]}


def test_an_unknown_sweep_is_none(runs):
    assert runs.load_sweep("sweep-never") is None and runs.list_sweeps() == []


def test_list_sweeps_is_newest_first_and_skips_half_written_ones(runs):
    runs.save_sweep("sweep-old", {"x": np.zeros(1)}, {"n": 1})
    runs.save_sweep("sweep-new", {"x": np.zeros(1)}, {"n": 2})
    folder = runs.root / store.SWEEPS_FOLDER
    old_time = (folder / "sweep-old.json").stat().st_mtime - 10
    os.utime(folder / "sweep-old.json", (old_time, old_time))
    (folder / "sweep-half.json").write_text("{}")  # its .npz never arrived
    assert runs.list_sweeps() == [("sweep-new", {"n": 2}), ("sweep-old", {"n": 1})]


def test_sweeps_are_not_runs(runs, run_id):
    runs.save_sweep("sweep-1", {"x": np.zeros(1)}, {})
    assert [r.id for r in runs.list()] == [run_id]


@pytest.mark.parametrize("key", ["../escape", "a/b", ".hidden", ""])
def test_unsafe_sweep_keys_are_refused(runs, key):
    with pytest.raises(ValueError, match="not a valid sweep key"):
        runs.save_sweep(key, {"x": np.zeros(1)}, {})


def test_object_arrays_are_refused_in_sweeps(runs):
    with pytest.raises(ValueError, match="holds Python objects"):
        runs.save_sweep("sweep-1", {"x": np.array([{"a": 1}], dtype=object)}, {})


def test_a_status_is_stored_as_its_plain_text(runs, run_id):
    runs.save_checkpoint(run_id, 0, a_state())
    runs.finish(run_id, Status.CANCELLED)
    assert '"status": "cancelled"' in (runs.root / run_id / "settings.json").read_text()


def test_a_listed_status_is_one_of_the_status_type(runs, run_id):
    [info] = runs.list()
    assert info.status is Status.RUNNING and info.status == "running"


def test_the_trainers_stop_is_a_cancelled_run():
    from engine.experiment import STORE_STATUS
    assert STORE_STATUS["stopped"] is Status.CANCELLED
