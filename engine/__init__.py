"""Dynamics Lab's engine: data, models, training, jobs, run store and the analyses.

Importing the package is cheap and pulls in no torch; import the submodule you need
(`from engine import data, models, train`). The notebook API is here too:
`engine.import_run(...)` turns your own model, checkpoints and data into a run (see
`engine.external`); its import is deferred until it is first used.
"""

__all__ = ["import_run"]


def __getattr__(name: str):
    """`engine.import_run`, imported (with torch) only when first asked for."""
    if name == "import_run":
        from engine.external import import_run
        return import_run
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
