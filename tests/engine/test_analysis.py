import numpy as np

from engine import analysis, results, tables
from engine.store import RunStore


def test_results_split_into_arrays_and_back():
    view = results.FunctionFit(np.arange(3.0), np.ones(3), None, np.zeros(2), np.ones(2), "angle")
    arrays, meta = results.to_arrays(view)
    back = results.from_arrays(results.FunctionFit, arrays, meta)
    assert back.x_label == "angle" and back.target is None and np.array_equal(back.x, view.x)


def parity(ctx, store, run_id, k=1):
    return results.Parity(np.arange(4.0), np.arange(4.0) * k)


def test_key_depends_on_every_setting_and_is_a_safe_name():
    a = analysis.artifact_key("surface", {"n": 5, "split": "train"}, parity)
    assert a == analysis.artifact_key("surface", {"split": "train", "n": 5}, parity)
    assert a != analysis.artifact_key("surface", {"n": 6, "split": "train"}, parity)
    assert a.replace("-", "").isalnum()


def a_stored_run(tmp_path):
    store = RunStore(tmp_path)
    return store, store.create("r", {})


def test_a_result_of_an_older_recipe_version_is_not_served(tmp_path, monkeypatch):
    store, run_id = a_stored_run(tmp_path)
    analysis.cached(None, store, run_id, "parity", {"k": 2}, parity)
    monkeypatch.setattr(parity, "version", 2, raising=False)
    analysis.recipe_version.cache_clear()
    assert analysis.load(store, run_id, "parity", {"k": 2}, parity) is None


def test_a_result_made_by_an_older_engine_is_not_served(tmp_path, monkeypatch):
    store, run_id = a_stored_run(tmp_path)
    analysis.cached(None, store, run_id, "parity", {"k": 2}, parity)
    monkeypatch.setattr(analysis, "ENGINE_VERSION", "0.0.1-old")
    analysis.recipe_version.cache_clear()
    assert analysis.load(store, run_id, "parity", {"k": 2}, parity) is None


def test_editing_a_recipes_source_makes_a_new_version(tmp_path, monkeypatch):
    import importlib
    import sys
    module = tmp_path / "edited_recipes.py"
    module.write_text("def recipe(ctx, store, run_id):\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    edited = importlib.import_module("edited_recipes")
    before = analysis.recipe_version(edited.recipe)
    module.write_text("def recipe(ctx, store, run_id):\n    return 2 * 1\n")
    edited = importlib.reload(edited)
    assert analysis.recipe_version(edited.recipe) != before
    monkeypatch.delitem(sys.modules, "edited_recipes")


def test_the_same_recipe_and_settings_are_served_from_the_cache(tmp_path):
    store, run_id = a_stored_run(tmp_path)
    made = analysis.cached(None, store, run_id, "parity", {"k": 2}, parity)
    loaded = analysis.load(store, run_id, "parity", {"k": 2}, parity)
    assert np.array_equal(loaded.prediction, made.prediction)


def test_cached_computes_once_then_loads(tmp_path):
    store = RunStore(tmp_path)
    run_id = store.create("r", {})
    calls = []

    def compute(ctx, store, run_id, k):
        calls.append(k)
        return results.Parity(np.arange(4.0), np.arange(4.0) * 2)

    first = analysis.cached(None, store, run_id, "parity", {"k": 1}, compute)
    second = analysis.cached(None, store, run_id, "parity", {"k": 1}, compute)
    assert len(calls) == 1 and np.array_equal(first.prediction, second.prediction)


def test_npz_export_holds_the_arrays_and_the_settings():
    import io
    import json
    surface = results.Surface(xs=np.arange(3.0), ys=np.arange(2.0), loss=np.ones((2, 3)), settings={"n": 5})
    saved = np.load(io.BytesIO(results.to_npz_bytes(surface)), allow_pickle=False)
    assert saved["loss"].shape == (2, 3) and json.loads(str(saved["meta"]))["fields"]["settings"] == {"n": 5}


def test_csv_of_a_surface_has_one_row_per_grid_point():
    surface = results.Surface(xs=np.array([0.0, 1.0, 2.0]), ys=np.array([5.0, 6.0]),
                              loss=np.arange(6.0).reshape(2, 3))
    lines = tables.to_csv(surface).splitlines()
    assert lines[0] == "x,y,loss" and len(lines) == 7 and lines[-1] == "2,6,5"


def test_csv_of_a_path_has_one_row_per_point():
    path = results.LinearPath(xs=np.linspace(0, 1, 4), loss=np.ones(4), accuracy=np.ones(4))
    assert tables.to_csv(path).splitlines()[0] == "t,loss,accuracy"


def test_csv_leaves_out_text_columns():
    view = results.Embedding(points=np.zeros((3, 2)), values=np.arange(3), hover=np.array(["a", "b", "c"]))
    assert tables.to_csv(view).splitlines()[0] == "sample,point[1],point[2],class"
