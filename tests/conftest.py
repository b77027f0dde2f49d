"""The whole suite: the engine is imported before anything loads torch, so that the tests run
under the lab's own OpenMP wait policy (see engine/__init__.py)."""
import engine  # noqa: F401
