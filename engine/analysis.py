"""Analyses of stored runs, computed once and kept in the run store by their settings.

A lens asks for `cached(ctx, store, run_id, lens, settings, recipe)`: the first time it calls
`recipe(ctx, store, run_id, **settings)` (as a job, with progress; see `engine.recipes`),
saves the result beside the run, and every later call with the same settings loads it.
Results are the dataclasses of `engine.results`.
"""
from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from typing import Callable

from engine import results


def artifact_key(lens: str, settings: dict) -> str:
    """A file-safe key for one analysis of one run: its lens and a hash of its settings."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
    return f"{lens}-{digest[:16]}"


def load(store, run_id: str, lens: str, settings: dict):
    """The stored result of this analysis, or None if it has not been computed."""
    saved = store.load_artifact(run_id, artifact_key(lens, settings))
    if saved is None:
        return None
    arrays, meta = saved
    return results.from_arrays(getattr(results, meta["type"]), arrays, meta)


def save(store, run_id: str, lens: str, settings: dict, result) -> None:
    arrays, meta = results.to_arrays(result)
    store.save_artifact(run_id, artifact_key(lens, settings), arrays, meta | {"settings": settings})


def cached(ctx, store, run_id: str, lens: str, settings: dict, recipe: Callable):
    """The analysis' result: loaded if stored, else computed by the recipe, saved, returned.

    Written to run as a job function (`ctx` is the job's context). When the run is deleted
    while the recipe works, it ends with a ValueError saying so, and nothing is saved.
    """
    result = load(store, run_id, lens, settings)
    if result is not None:
        return result
    with _deleted_run_is_a_sentence(store, run_id, lens):
        result = recipe(ctx, store, run_id, **settings)
        save(store, run_id, lens, settings, result)
    return result


@contextmanager
def _deleted_run_is_a_sentence(store, run_id: str, lens: str):
    """Turn whatever error a run's deletion caused (a file gone, a folder gone) into one sentence.

    The store never makes a run's folder again once it is gone (artifacts go into an existing
    run only), so a late save fails instead of leaving a half-recreated run behind.
    """
    try:
        yield
    except Exception as exc:
        if store.exists(run_id):
            raise
        raise ValueError(f"Run {run_id!r} was deleted while the {lens} analysis was being computed; "
                         "nothing was saved.") from exc
