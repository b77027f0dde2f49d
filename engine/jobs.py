"""Jobs: slow work that runs in worker threads, outside Streamlit's script thread.

A page submits a function; the function runs in a daemon thread and talks back through a
`JobContext` (progress, a message, partial results) and watches it for a cancel request.
Pages never touch the running job: they read immutable `JobState` snapshots, so a fragment
that polls every half second can render whatever it gets without locking anything.

    manager = JobManager(max_workers=2)
    job_id = manager.submit(train, owner=session_id, kind="train", label="MLP on moons", steps=500)
    state = manager.get(job_id, owner=session_id)     # JobState, or None for another owner

    def train(ctx, steps):
        for step in range(steps):
            ctx.check()                                # raises Cancelled once cancel was asked
            ...
            ctx.report(progress=step / steps, message=f"step {step}", loss=loss_history)
        return history

Every job belongs to an owner (one browser session): an owner sees only its own jobs.
At most `max_workers` jobs run at once; later ones wait with status "queued".
Statuses are `engine.status.Status` members (str-valued, so "done" == Status.DONE).
This module imports only the standard library and `engine.status`.
"""
from __future__ import annotations

import itertools
import threading
import time
import traceback
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from engine.status import JOB_ENDINGS, Status

__all__ = ["Cancelled", "JobState", "JobContext", "JobManager"]

QUEUED, RUNNING, DONE, FAILED, CANCELLED = Status.QUEUED, Status.RUNNING, Status.DONE, Status.FAILED, Status.CANCELLED
TERMINAL = JOB_ENDINGS
KEEP_FINISHED = 50  # finished jobs kept per owner; older ones are forgotten


class Cancelled(Exception):
    """Raised inside a job (by `JobContext.check`) to stop it early; the job ends "cancelled"."""


@dataclass(frozen=True)
class JobState:
    """An immutable snapshot of one job, safe to hand to a page.

    Attributes:
        id: the job id (uuid4 hex).
        owner: the session that submitted it.
        kind: what sort of job it is ("train", "landscape", ...), for filtering.
        label: a human title.
        status: "queued", "running", "done", "failed" or "cancelled".
        progress: 0..1; 1.0 once done.
        message: the latest sentence the job reported.
        partial: the latest partial results (a shallow copy of the merged reports).
        result: the job function's return value (also kept when a job returns after a cancel).
        error: a sentence saying why it failed, else None.
        detail: the traceback text of a failure, else None.
        created, started, finished: `time.time()` stamps; None until they happen.
    """

    id: str
    owner: str
    kind: str
    label: str
    status: Status
    progress: float
    message: str
    partial: dict
    result: object | None
    error: str | None
    detail: str | None
    created: float
    started: float | None
    finished: float | None

    @property
    def done(self) -> bool:
        """True once the job has ended: done, failed or cancelled."""
        return self.status in TERMINAL


class JobContext:
    """What a job function receives: a way to report and a way to notice a cancel request.

    Attributes:
        job_id: the id of the job this context belongs to.
        stop_event: set when a cancel was requested; a job may wait on it instead of sleeping.
    """

    def __init__(self, job_id: str, on_report: Callable[[float | None, str | None, dict], None]):
        """Args:
            job_id: the job's id.
            on_report: called with (progress, message, partial) by `report`; the manager
                passes a function that stores them under its lock.
        """
        self.job_id = job_id
        self.stop_event = threading.Event()
        self._on_report = on_report

    def report(self, progress: float | None = None, message: str | None = None, **partial: Any) -> None:
        """Publish progress, a message and partial results; safe from any thread.

        Args:
            progress: a fraction in 0..1 (clamped); None keeps the previous value.
            message: a sentence for the user; None keeps the previous one.
            **partial: partial results; each key replaces the previous value of that key,
                keys not named keep their values.
        """
        self._on_report(progress, message, partial)

    @property
    def cancelled(self) -> bool:
        """True once a cancel was requested."""
        return self.stop_event.is_set()

    def check(self) -> None:
        """Raise `Cancelled` if a cancel was requested; call it between units of work."""
        if self.cancelled:
            raise Cancelled("The job was cancelled.")


@dataclass
class _Job:
    """The mutable record behind a job; read and written only under the manager's lock."""

    id: str
    owner: str
    kind: str
    label: str
    seq: int  # submission order, to list newest first even within one clock tick
    fn: Callable[..., Any] | None
    kwargs: dict
    ctx: JobContext | None = None
    thread: threading.Thread | None = None
    status: Status = QUEUED
    progress: float = 0.0
    message: str = ""
    partial: dict = field(default_factory=dict)
    result: Any = None
    error: str | None = None
    detail: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    def snapshot(self) -> JobState:
        """An immutable copy of the current state (partial results copied shallowly)."""
        return JobState(
            id=self.id, owner=self.owner, kind=self.kind, label=self.label,
            status=self.status, progress=self.progress, message=self.message,
            partial=dict(self.partial), result=self.result, error=self.error,
            detail=self.detail, created=self.created, started=self.started,
            finished=self.finished,
        )


def _sentence(exc: BaseException) -> str:
    """The message of an exception, or its type's name when the message is empty."""
    return str(exc).strip() or type(exc).__name__


class JobManager:
    """Runs job functions in daemon threads, at most `max_workers` at a time.

    One manager serves the whole server (the app makes it with `st.cache_resource`); owners
    keep the sessions apart. All state lives in `_Job` records guarded by one condition
    variable; callers only ever get `JobState` snapshots.
    """

    def __init__(self, max_workers: int = 2, keep_finished: int = KEEP_FINISHED):
        """Args:
            max_workers: how many jobs may run at once; the rest wait as "queued".
            keep_finished: how many finished jobs to remember per owner.
        """
        if max_workers < 1:
            raise ValueError("A job manager needs at least one worker.")
        self._max_workers = max_workers
        self._keep_finished = keep_finished
        self._jobs: dict[str, _Job] = {}
        self._queue: deque[_Job] = deque()
        self._running = 0
        self._seq = itertools.count()
        self._changed = threading.Condition()  # guards everything above; notified on every end
        self._closed = False

    # ----- the public API -------------------------------------------------------------

    def submit(self, fn: Callable[..., Any], *, owner: str, kind: str, label: str = "", **kwargs: Any) -> str:
        """Queue `fn(ctx, **kwargs)` to run in a worker thread and return the new job's id.

        Args:
            fn: the job function; it receives a `JobContext` first, then `kwargs`.
            owner: the session the job belongs to.
            kind: what sort of job it is, for `list(owner, kind)`.
            label: a human title.
            **kwargs: passed on to `fn`.
        Raises:
            RuntimeError: after `shutdown`.
        """
        job = _Job(id=uuid.uuid4().hex, owner=owner, kind=kind, label=label,
                   seq=next(self._seq), fn=fn, kwargs=kwargs)
        job.ctx = JobContext(job.id, lambda progress, message, partial: self._report(job, progress, message, partial))
        with self._changed:
            if self._closed:
                raise RuntimeError("The job manager has been shut down; no new jobs start.")
            self._jobs[job.id] = job
            self._queue.append(job)
            self._start_queued()
        return job.id

    def get(self, job_id: str, owner: str) -> JobState | None:
        """A snapshot of the job, or None when the id is unknown or belongs to another owner."""
        with self._changed:
            job = self._find(job_id, owner)
            return job.snapshot() if job else None

    def list(self, owner: str, kind: str | None = None) -> list[JobState]:
        """Snapshots of the owner's jobs (of one kind, if given), newest first."""
        with self._changed:
            jobs = [j for j in self._jobs.values() if j.owner == owner and kind in (None, j.kind)]
            return [j.snapshot() for j in sorted(jobs, key=lambda j: j.seq, reverse=True)]

    def cancel(self, job_id: str, owner: str) -> bool:
        """Ask a job to stop; True when a queued or running job of this owner was found.

        A queued job ends "cancelled" at once. A running job has its stop event set and ends
        "cancelled" when its function next calls `ctx.check()` or returns.
        """
        with self._changed:
            job = self._find(job_id, owner)
            if job is None or job.done:
                return False
            if job.status == QUEUED:
                self._queue.remove(job)
                self._end(job, CANCELLED)
            else:
                job.ctx.stop_event.set()
            return True

    def wait(self, job_id: str, owner: str, timeout: float | None = None) -> JobState:
        """Block until the job has ended (or `timeout` seconds passed) and return its snapshot.

        The returned state is not `done` when the timeout ran out first.
        Raises:
            ValueError: when the id is unknown or belongs to another owner.
        """
        with self._changed:
            job = self._find(job_id, owner)
            if job is None:
                raise ValueError(f"There is no job {job_id!r} for this session.")
            self._changed.wait_for(lambda: job.done, timeout)
            return job.snapshot()

    def forget(self, job_id: str, owner: str) -> bool:
        """Drop a finished job from memory; True if it was dropped (running jobs are kept)."""
        with self._changed:
            job = self._find(job_id, owner)
            if job is None or not job.done:
                return False
            del self._jobs[job_id]
            return True

    def shutdown(self, cancel: bool = True, timeout: float = 5.0) -> bool:
        """Stop taking jobs and join the worker threads.

        Args:
            cancel: cancel queued and running jobs first; False lets them all finish.
            timeout: seconds to wait in total.
        Returns:
            True when every worker thread has ended within the timeout.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            self._closed = True
            if cancel:
                while self._queue:
                    self._end(self._queue.popleft(), CANCELLED)
                for job in self._jobs.values():
                    if job.status == RUNNING:
                        job.ctx.stop_event.set()
            self._changed.wait_for(lambda: self._running == 0 and not self._queue, timeout)
            threads = [j.thread for j in self._jobs.values() if j.thread is not None]
        # A job counts as ended just before its thread returns: join for the last few lines.
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in threads)

    # ----- inside the lock -----------------------------------------------------------

    def _find(self, job_id: str, owner: str) -> _Job | None:
        job = self._jobs.get(job_id)
        return job if job is not None and job.owner == owner else None

    def _start_queued(self) -> None:
        """Start queued jobs while workers are free (caller holds the lock)."""
        while self._queue and self._running < self._max_workers:
            job = self._queue.popleft()
            job.status, job.started = RUNNING, time.time()
            job.thread = threading.Thread(target=self._run, args=(job,),
                                          name=f"dynamics-lab-job-{job.id[:8]}", daemon=True)
            self._running += 1
            job.thread.start()

    def _end(self, job: _Job, status: Status, result: Any = None,
             error: str | None = None, detail: str | None = None) -> None:
        """Record how a job ended, free its worker slot and start the next one (lock held)."""
        if job.status == RUNNING:
            self._running -= 1
        job.status, job.result, job.error, job.detail = status, result, error, detail
        job.finished = time.time()
        if status == DONE:
            job.progress = 1.0
        job.fn, job.kwargs = None, {}  # let go of models and tensors the job was given
        self._forget_old(job.owner)
        self._start_queued()
        self._changed.notify_all()

    def _forget_old(self, owner: str) -> None:
        """Keep only the newest `keep_finished` finished jobs of an owner (lock held)."""
        finished = [j for j in self._jobs.values() if j.owner == owner and j.done]
        finished.sort(key=lambda j: j.seq)
        for job in finished[: max(0, len(finished) - self._keep_finished)]:
            del self._jobs[job.id]

    # ----- in the worker thread --------------------------------------------------------

    def _run(self, job: _Job) -> None:
        """Run the job function and record the outcome; never lets an exception escape."""
        try:
            result = job.fn(job.ctx, **job.kwargs)
        except Cancelled:
            outcome = dict(status=CANCELLED)
        except BaseException as exc:  # a job must never take its bookkeeping down with it
            outcome = dict(status=FAILED, error=_sentence(exc), detail=traceback.format_exc())
        else:
            # A job that noticed the cancel and returned early was cancelled, not done.
            outcome = dict(status=CANCELLED if job.ctx.cancelled else DONE, result=result)
        with self._changed:
            self._end(job, **outcome)

    def _report(self, job: _Job, progress: float | None, message: str | None, partial: dict) -> None:
        """Store what a job reported (called from its thread through `JobContext.report`)."""
        with self._changed:
            if job.done:
                return
            if progress is not None and progress == progress:  # `p == p` is False for NaN
                job.progress = min(1.0, max(0.0, float(progress)))
            if message is not None:
                job.message = str(message)
            job.partial.update(partial)
