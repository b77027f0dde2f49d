"""One vocabulary for how a job or a stored run stands.

`Status` is a `str` Enum: a member equals its text (`Status.DONE == "done"`), so it goes into
JSON as plain text, old settings.json files read back unchanged, and code that still compares
strings keeps working. Jobs use QUEUED to CANCELLED; the run store adds INTERRUPTED (its
writing process died) and DAMAGED (its files cannot be read).
"""
from __future__ import annotations

from enum import Enum

__all__ = ["Status", "JOB_ENDINGS", "RUN_ENDINGS", "STORED", "WITH_WEIGHTS", "TRAINING_OUTCOME"]


class Status(str, Enum):
    QUEUED = "queued"            # a job waiting for a free worker
    RUNNING = "running"          # a job working, or a run being trained
    DONE = "done"                # finished as asked
    DIVERGED = "diverged"        # training stopped because the loss blew up
    CANCELLED = "cancelled"      # stopped on request
    FAILED = "failed"            # ended by an error, with its sentence
    INTERRUPTED = "interrupted"  # a stored run whose training process ended without finishing it
    DAMAGED = "damaged"          # a stored run whose files cannot be read

    def __str__(self) -> str:
        return self.value


# How a job can end.
JOB_ENDINGS = frozenset({Status.DONE, Status.FAILED, Status.CANCELLED})
# What `RunStore.finish` may record.
RUN_ENDINGS = frozenset({Status.DONE, Status.DIVERGED, Status.CANCELLED, Status.FAILED})
# What a stored settings.json may say (DAMAGED is only ever reported, never written).
STORED = frozenset({Status.RUNNING, Status.INTERRUPTED}) | RUN_ENDINGS
# Runs whose weights can be analysed: ended, and not damaged.
WITH_WEIGHTS = RUN_ENDINGS | {Status.INTERRUPTED}
# How a training ended (`engine.train.Outcome.status`) -> the run's status: a stop request
# ends it cancelled.
TRAINING_OUTCOME = {"done": Status.DONE, "stopped": Status.CANCELLED, "diverged": Status.DIVERGED,
                    "failed": Status.FAILED}
