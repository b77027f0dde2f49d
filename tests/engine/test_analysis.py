import numpy as np

from engine import analysis, results
from engine.store import RunStore


def test_results_split_into_arrays_and_back():
    view = results.FunctionFit(np.arange(3.0), np.ones(3), None, np.zeros(2), np.ones(2), "angle")
    arrays, meta = results.to_arrays(view)
    back = results.from_arrays(results.FunctionFit, arrays, meta)
    assert back.x_label == "angle" and back.target is None and np.array_equal(back.x, view.x)


def test_key_depends_on_every_setting_and_is_a_safe_name():
    a = analysis.artifact_key("surface", {"n": 5, "split": "train"})
    assert a == analysis.artifact_key("surface", {"split": "train", "n": 5})
    assert a != analysis.artifact_key("surface", {"n": 6, "split": "train"})
    assert a.replace("-", "").isalnum()


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
    lines = results.to_csv(surface).splitlines()
    assert lines[0] == "a,b,loss" and len(lines) == 7 and lines[-1] == "2,6,5"


def test_csv_of_a_path_has_one_row_per_point():
    path = results.LinearPath(xs=np.linspace(0, 1, 4), loss=np.ones(4), accuracy=np.ones(4))
    assert results.to_csv(path).splitlines()[0] == "xs,loss,accuracy"


def test_csv_leaves_out_text_columns():
    view = results.Embedding(points=np.zeros((3, 2)), values=np.arange(3), hover=np.array(["a", "b", "c"]))
    assert results.to_csv(view).splitlines()[0] == "values"
