"""Losses by name: the one place where "ce", "mse" and "auto" turn into functions.

The engine's contract (DESIGN.md) is that `loss` is "ce", "mse" or a callable
(output, target) -> scalar mean. Two steps make a function of it, kept apart because a run's
settings store the name while the analyses need the function:

- `loss_for_task(name, task)`: the name a setting means for a dataset's task ("auto" becomes
  "ce" for classification, "mse" for regression);
- `loss_function(loss, task=None)`: the function itself, for a name (with "auto" read through
  the task) or a callable, which is returned as it is.

Cross-entropy is `torch.nn.functional.cross_entropy` itself, so code may recognise it by
identity (the landscape's fast path for stacks of linear layers does).
"""
from __future__ import annotations

from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F

__all__ = ["LOSSES", "TASKS", "LossArg", "LossFunction", "loss_for_task", "loss_function", "loss_name", "mse"]

LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LossArg = Union[str, LossFunction]  # "ce", "mse", "auto" (with a task) or a function
LOSSES = ("auto", "ce", "mse")
TASKS = ("classification", "regression")


def loss_for_task(name: LossArg, task: str) -> LossArg:
    """The loss a name means for a task: "auto" -> "ce" for classification, "mse" for regression.

    A function is its own choice and comes back unchanged.

    Raises:
        ValueError: with a sentence, for an unknown name or task, and for cross-entropy on
            regression targets (it needs class labels).
    """
    if callable(name):
        return name
    if name not in LOSSES:
        raise ValueError(f"The loss must be one of {', '.join(LOSSES)} (or a function), not {name!r}.")
    if task not in TASKS:
        raise ValueError(f"The task must be 'classification' or 'regression', not {task!r}.")
    if name == "auto":
        return "ce" if task == "classification" else "mse"
    if name == "ce" and task != "classification":
        raise ValueError("Cross-entropy needs class labels; use MSE for regression data.")
    return name


def loss_function(loss: LossArg, task: Optional[str] = None) -> LossFunction:
    """"ce", "mse", "auto" or a callable (output, target) -> scalar mean, as a callable.

    Args:
        loss: a name, or a function, which is returned unchanged.
        task: "classification" or "regression"; needed for "auto", and checked against the
            name when given (cross-entropy on regression targets is refused).

    Raises:
        ValueError: with a sentence, for an unknown name, or "auto" without a task.
    """
    if callable(loss):
        return loss
    if task is not None:
        loss = loss_for_task(loss, task)
    elif loss == "auto":
        raise ValueError("The loss 'auto' is chosen by the task: say whether the data is "
                         "'classification' or 'regression', or name the loss ('ce' or 'mse').")
    if loss == "ce":
        return F.cross_entropy
    if loss == "mse":
        return mse
    raise ValueError(f"The loss must be 'ce', 'mse' or a function, not {loss!r}.")


def mse(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error; class labels (integers) are regressed as one-hot targets as wide
    as the output, and real targets are matched to the output's shape ((N,) to (N, 1))."""
    if not target.is_floating_point():
        target = F.one_hot(target, output.shape[-1]).to(output.dtype)
    return F.mse_loss(output, target.reshape(output.shape))


def loss_name(loss: LossArg) -> str:
    """A loss's name for a result's settings ("ce", "mse", or the function's name)."""
    return loss if isinstance(loss, str) else getattr(loss, "__name__", "custom")
