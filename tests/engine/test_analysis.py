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
