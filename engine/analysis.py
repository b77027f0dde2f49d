"""Analyses of stored runs, computed once and kept in the run store by what made them.

A lens asks for `cached(ctx, store, run_id, lens, settings, recipe)`: the first time it calls
`recipe(ctx, store, run_id, **settings)` (as a job, with progress; see `engine.recipes`),
saves the result beside the run, and every later call with the same settings loads it.
Results are the dataclasses of `engine.results`.

A result is keyed by its lens, its settings and the code that made it (`recipe_version`):
after a recipe or the engine changes, results cached by the old code are not served as
current; they are computed again.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import json
from contextlib import contextmanager
from importlib import metadata
from typing import Callable, Optional

from engine import results
from engine.protocols import AnalysisStore, JobContext

__all__ = ["recipe_version", "artifact_key", "load", "save", "cached"]


def _engine_version() -> str:
    try:
        return metadata.version("dynamics-lab")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "source"


ENGINE_VERSION = _engine_version()


@functools.lru_cache(maxsize=256)
def recipe_version(recipe: Callable) -> str:
    """What made a recipe's results: its `version` attribute if it declares one, its source
    code (so an edited recipe is a new version), and the engine's version.

    A recipe whose change lies in a helper it calls says so by raising its `version`.
    """
    target = recipe.func if isinstance(recipe, functools.partial) else recipe
    try:
        source = inspect.getsource(target)
    except (OSError, TypeError):  # built in, or defined where no source is kept
        source = f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', repr(target))}"
    if isinstance(recipe, functools.partial):
        source += repr((recipe.args, sorted(recipe.keywords.items())))
    made_by = {"engine": ENGINE_VERSION, "version": str(getattr(target, "version", "")), "source": source}
    return hashlib.sha256(json.dumps(made_by, sort_keys=True).encode()).hexdigest()[:16]


def artifact_key(lens: str, settings: dict, recipe: Callable) -> str:
    """A file-safe key for one analysis of one run: its lens, and a hash of its settings and
    of the code that computes it (`recipe_version`)."""
    made_of = {"settings": settings, "recipe": recipe_version(recipe)}
    digest = hashlib.sha256(json.dumps(made_of, sort_keys=True, default=str).encode()).hexdigest()
    return f"{lens}-{digest[:16]}"


def load(store: AnalysisStore, run_id: str, lens: str, settings: dict, recipe: Callable):
    """The stored result of this analysis by this recipe, or None if it has not been computed."""
    saved = store.load_artifact(run_id, artifact_key(lens, settings, recipe))
    if saved is None:
        return None
    arrays, meta = saved
    return results.from_arrays(getattr(results, meta["type"]), arrays, meta)


def save(store: AnalysisStore, run_id: str, lens: str, settings: dict, recipe: Callable, result) -> None:
    arrays, meta = results.to_arrays(result)
    store.save_artifact(run_id, artifact_key(lens, settings, recipe), arrays,
                        meta | {"settings": settings, "recipe_version": recipe_version(recipe)})


def cached(ctx: Optional[JobContext], store: AnalysisStore, run_id: str, lens: str, settings: dict, recipe: Callable):
    """The analysis' result: loaded if stored, else computed by the recipe, saved, returned.

    Written to run as a job function (`ctx` is the job's context). When the run is deleted
    while the recipe works, it ends with a ValueError saying so, and nothing is saved.
    """
    result = load(store, run_id, lens, settings, recipe)
    if result is not None:
        return result
    with _deleted_run_is_a_sentence(store, run_id, lens):
        result = recipe(ctx, store, run_id, **settings)
        save(store, run_id, lens, settings, recipe, result)
    return result


@contextmanager
def _deleted_run_is_a_sentence(store: AnalysisStore, run_id: str, lens: str):
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
