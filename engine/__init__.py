"""Dynamics Lab's engine: data, models, training, jobs, run store and the analyses.

Importing the package is cheap and pulls in no torch; import the submodule you need
(`from engine import data, models, train`). The notebook API is here too, each name
imported (with torch) only when first used:

- `engine.import_run(...)` turns your own model, checkpoints and data into a run (see
  `engine.external`);
- `engine.load_model(store, run_id)` and `engine.load_dataset(store, run_id)` read any run
  back, the lab's or an imported one (see `engine.experiment`);
- `engine.RunStore()` is the run store (`$DYNAMICS_LAB_HOME/runs` by default).
"""

# The notebook API: name -> the module that defines it, imported when the name is first asked for.
_LAZY = {"import_run": "engine.external", "load_model": "engine.experiment",
         "load_dataset": "engine.experiment", "RunStore": "engine.store"}

__all__ = list(_LAZY)


def __getattr__(name: str):
    """A name of the notebook API, imported (with torch) only when first asked for."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
