"""Plain results: small dataclasses of numpy arrays that viz/ turns into figures.

This module imports numpy only (no torch), so viz/ and pages can use it freely and
results can be saved, compared and plotted without the engine's heavy imports.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np


@dataclass
class History:
    """What a training run measured.

    Attributes:
        step: the step of each entry of `train_loss` (every step).
        train_loss: the minibatch loss at each step.
        eval_step: the steps at which the evaluation ran (every `eval_every` steps).
        eval_train_loss, eval_train_accuracy: loss and accuracy on the (whole or a fixed
            subset of the) training split at each evaluation.
        test_loss, test_accuracy: the same on the test split. Accuracies are NaN for
            regression.
    """

    step: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    eval_step: list[int] = field(default_factory=list)
    eval_train_loss: list[float] = field(default_factory=list)
    eval_train_accuracy: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, list]:
        return {f.name: list(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        return cls(**{f.name: list(d.get(f.name, [])) for f in fields(cls)})

    def copy(self) -> "History":
        return History.from_dict(self.to_dict())

    @property
    def last_step(self) -> int:
        return self.step[-1] if self.step else 0


@dataclass
class DecisionRegions:
    """A model's predictions over a 2-D grid, with the data points on top.

    Attributes:
        grid_x: (Gx,) grid coordinates along the first input.
        grid_y: (Gy,) grid coordinates along the second input.
        value: (Gy, Gx) predicted class (classification) or predicted value of the first
            output (regression).
        confidence: (Gy, Gx) probability of the predicted class; ones for regression.
        points: (N, 2) data points shown on top.
        labels: (N,) their class or target value.
        task: "classification" or "regression".
        n_classes: number of classes (0 for regression).
    """

    grid_x: np.ndarray
    grid_y: np.ndarray
    value: np.ndarray
    confidence: np.ndarray
    points: np.ndarray
    labels: np.ndarray
    task: str
    n_classes: int


@dataclass
class FunctionFit:
    """A 1-D function: the model against the target along one coordinate.

    Attributes:
        x: (G,) the coordinate (the input for 1-D data, the angle for the circle).
        prediction: (G,) the model's output.
        target: (G,) the true function, or None if it is unknown.
        points_x, points_y: the training points.
        x_label: what the coordinate is ("x" or "angle").
    """

    x: np.ndarray
    prediction: np.ndarray
    target: np.ndarray | None
    points_x: np.ndarray
    points_y: np.ndarray
    x_label: str = "x"


@dataclass
class Confusion:
    """Counts of (true class, predicted class) on the test split."""

    matrix: np.ndarray  # (C, C), rows true, columns predicted
    labels: list[str]


@dataclass
class Parity:
    """Predicted against true targets on the test split (regression of many inputs)."""

    target: np.ndarray  # (N,)
    prediction: np.ndarray  # (N,)


# ---------------------------------------------------------------- saving any result

def to_arrays(result) -> tuple[dict[str, np.ndarray], dict]:
    """Split a result dataclass into its numpy arrays and the JSON-friendly rest.

    The pair is what `engine.store.RunStore.save_artifact` takes; `from_arrays` reverses it.
    Nested dicts of arrays are flattened with '/' in their keys.
    """
    arrays, meta = {}, {"type": type(result).__name__, "fields": {}}
    for f in fields(result):
        value = getattr(result, f.name)
        if isinstance(value, np.ndarray):
            arrays[f.name] = value
        elif isinstance(value, dict) and value and all(isinstance(v, np.ndarray) for v in value.values()):
            arrays.update({f"{f.name}/{k}": v for k, v in value.items()})
            meta["fields"][f.name] = {"$arrays": list(value)}
        else:
            meta["fields"][f.name] = value
    return arrays, meta


def from_arrays(cls, arrays: dict[str, np.ndarray], meta: dict):
    """The result `to_arrays` split (cls is its dataclass)."""
    values = {}
    for f in fields(cls):
        if f.name in arrays:
            values[f.name] = arrays[f.name]
        elif isinstance(meta["fields"].get(f.name), dict) and "$arrays" in meta["fields"][f.name]:
            values[f.name] = {k: arrays[f"{f.name}/{k}"] for k in meta["fields"][f.name]["$arrays"]}
        elif f.name in meta["fields"]:
            values[f.name] = meta["fields"][f.name]
    return cls(**values)
