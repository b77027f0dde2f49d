"""Dynamics Lab's engine: data, models, training, jobs, run store and the analyses.

Importing the package is cheap and pulls in no torch; import the submodule you need
(`from engine import data, models, train`). The notebook API is here too, each name
imported (with torch) only when first used:

- `engine.import_run(...)` turns your own model, checkpoints and data into a run (see
  `engine.external`);
- `engine.load_model(store, run_id)` and `engine.load_dataset(store, run_id)` read any run
  back, the lab's or an imported one (see `engine.experiment`);
- `engine.RunStore()` is the run store (`$DYNAMICS_LAB_HOME/runs` by default).

Importing it before torch also sets OpenMP's wait policy for the process (below), and
importing it at all makes `ast.parse` safe to call from several threads at once
(`engine.threadsafe_ast`: the lab's jobs parse while Streamlit or IPython does).
"""
import os as _os
import sys as _sys

from engine import threadsafe_ast as _threadsafe_ast

# torch's OpenMP threads spin at every barrier before they sleep. When another process holds
# a core, every parallel operation then waits for a thread that is not running: a 51 x 51
# moons surface took 6.4 s instead of 0.085 s with a `nice 19` job beside it (2 threads,
# bench/landscape.py). Passive threads sleep at once. OpenMP reads the policy when torch
# loads it, so this holds only where the engine is imported first (the app, `python -m
# engine`, the tests); a policy the user has set wins.
if "torch" not in _sys.modules:
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_threadsafe_ast.install()

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
