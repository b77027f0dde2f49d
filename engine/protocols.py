"""What the analyses and jobs need from a run store and from a job's context, as Protocols.

Recipes, the analysis cache and the training job take a `store` and a `ctx` without caring
which class they are: the app passes `engine.store.RunStore` and `engine.jobs.JobContext`,
the command line its `PrintingContext`, a test or a notebook anything with these methods.
The Protocols say exactly which methods that is, so annotations document it and a type
checker (or `isinstance`, they are runtime-checkable) can hold a new class to it.

- `JobContext`: report progress, notice a cancel request (`check`, `cancelled`).
- `RunReader`: read a run (settings, checkpoints, cached arrays), what every recipe needs.
- `AnalysisStore`: a `RunReader` that also caches results (`engine.analysis`).
- `RunWriter`: make a run and save what training produces (`engine.experiment.train_job`).
"""
from __future__ import annotations

from typing import Any, Optional, Protocol, runtime_checkable

__all__ = ["AnalysisStore", "JobContext", "RunReader", "RunWriter"]

Arrays = dict[str, Any]  # name -> numpy array
State = dict[str, Any]  # a state dict: name -> tensor


@runtime_checkable
class JobContext(Protocol):
    """What a job function receives from whoever runs it."""

    @property
    def cancelled(self) -> bool:
        """True once a cancel was requested."""

    def report(self, progress: Optional[float] = None, message: Optional[str] = None, **partial: Any) -> None:
        """Publish progress (a fraction in 0..1), a sentence, and partial results."""

    def check(self) -> None:
        """Raise (engine.jobs.Cancelled) if a cancel was requested; called between units of work."""


@runtime_checkable
class RunReader(Protocol):
    """Read access to stored runs: what recipes (`engine.recipes`) load a run through."""

    def settings(self, run_id: str) -> dict:
        """The run's settings (and name, status, summary)."""

    def checkpoint_steps(self, run_id: str) -> list[int]:
        """The steps that have checkpoints, ascending."""

    def load_checkpoint(self, run_id: str, step: Optional[int] = None, device: Any = "cpu") -> State:
        """The state dict saved at `step` (None: the last one)."""

    def load_artifact(self, run_id: str, key: str) -> Optional[tuple[Arrays, dict]]:
        """The cached (arrays, meta) under `key`, or None."""

    def list(self) -> list:
        """The runs (with `.id` and `.name`), newest first."""


@runtime_checkable
class AnalysisStore(RunReader, Protocol):
    """A run reader that caches analysis results beside the runs (`engine.analysis.cached`)."""

    def save_artifact(self, run_id: str, key: str, arrays: Arrays, meta: dict) -> None:
        """Cache (arrays, meta) under `key`."""

    def exists(self, run_id: str) -> bool:
        """True while the run is in the store."""


@runtime_checkable
class RunWriter(Protocol):
    """Write access for the training job: a new run, its checkpoints, metrics and ending."""

    def create(self, name: str, settings: dict) -> str:
        """Make a new run and return its id."""

    def save_checkpoint(self, run_id: str, step: int, state: State) -> None:
        """Save the weights at `step`."""

    def save_artifact(self, run_id: str, key: str, arrays: Arrays, meta: dict) -> None:
        """Save arrays beside the run (its data set, what probes watched)."""

    def save_metrics(self, run_id: str, metrics: dict) -> None:
        """Save what training measured."""

    def finish(self, run_id: str, status: str, summary: Optional[dict] = None, message: str = "") -> None:
        """Record how the run ended."""
