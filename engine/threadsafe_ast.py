"""One `ast.parse` at a time in this process: a guard against a CPython bug that the lab's
background threads would otherwise trip.

CPython keeps the depth counter of the AST constructor (the C code that turns a parse into
Python `ast` objects) in one place per interpreter, not per thread. When that code allocates,
a garbage collection may run a finaliser, the finaliser may hand the GIL to another thread,
and if that thread is parsing too, both move the one counter: the first to finish raises
`SystemError: AST constructor recursion depth mismatch` (python/cpython#106905 fixed one
path, not this one; seen on 3.11.7). Parsing happens more often than it looks: Streamlit
parses each page it runs, IPython each cell, numpy each `.npy` header it reads
(`ast.literal_eval`), `traceback` each line it underlines. The lab's jobs read arrays and
format tracebacks while a page runs, so the suite once failed on exactly this.

The guard wraps `ast.parse` (which `ast.literal_eval` calls too) in a lock: an uncontended
lock adds a fraction of a microsecond to a parse that takes microseconds to milliseconds.
"""
from __future__ import annotations

import ast
import functools
import threading

__all__ = ["install"]

_GUARDED = "_dynamics_lab_one_at_a_time"


def install() -> None:
    """Make `ast.parse` hold a process-wide lock while it runs. Idempotent.

    The lock is reentrant: a finaliser that parses, run by a collection inside a parse on the
    same thread, goes on instead of deadlocking."""
    if getattr(ast.parse, _GUARDED, False):
        return
    parse, lock = ast.parse, threading.RLock()

    @functools.wraps(parse)
    def parse_one_at_a_time(*args, **kwargs):
        with lock:
            return parse(*args, **kwargs)

    setattr(parse_one_at_a_time, _GUARDED, True)
    ast.parse = parse_one_at_a_time
