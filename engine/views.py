"""What a model predicts, as the plain results the Train page draws live.

`prediction_view(model, data)` picks the picture that suits the data:
- two input features: decision regions (or the regression surface) over a grid, points on top;
- one input feature: the fitted function against the target;
- points on the unit circle: the fitted function against the angle;
- otherwise: a confusion matrix (classification) or predicted-versus-true (regression).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from engine.data import Dataset
from engine.modes import evaluating
from engine.results import Confusion, DecisionRegions, FunctionFit, Parity

__all__ = ["predict", "prediction_view", "decision_regions", "line_fit", "circle_fit", "confusion", "parity", "GRID"]

GRID = 80  # grid points per axis for decision regions
MAX_POINTS = 1000  # data points drawn on top


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch: int = 8192) -> torch.Tensor:
    """The model's outputs on x, in eval mode, in batches, on the model's device."""
    device = next(model.parameters()).device
    with evaluating(model):
        outputs = [model(x[i:i + batch].to(device)) for i in range(0, len(x), batch)]
    return torch.cat(outputs).float().cpu()


def prediction_view(model: nn.Module, data: Dataset):
    """The live picture of what `model` predicts on `data` (see the module docstring)."""
    if data.name == "circle":
        return circle_fit(model, data)
    if data.n_features == 1:
        return line_fit(model, data)
    if data.n_features == 2:
        return decision_regions(model, data)
    if data.task == "classification":
        return confusion(model, data)
    return parity(model, data)


def _shown_points(data: Dataset) -> tuple[np.ndarray, np.ndarray]:
    x, y = data.x_train[:MAX_POINTS].cpu().numpy(), data.y_train[:MAX_POINTS].cpu().numpy()
    return x, (y if y.ndim == 1 else y[:, 0])


def decision_regions(model: nn.Module, data: Dataset, grid: int = GRID) -> DecisionRegions:
    points, labels = _shown_points(data)
    low, high = points.min(axis=0), points.max(axis=0)
    pad = 0.1 * (high - low) + 1e-6
    gx = np.linspace(low[0] - pad[0], high[0] + pad[0], grid)
    gy = np.linspace(low[1] - pad[1], high[1] + pad[1], grid)
    xx, yy = np.meshgrid(gx, gy)
    inputs = torch.tensor(np.stack([xx.ravel(), yy.ravel()], axis=1), dtype=torch.float32)
    out = predict(model, inputs)
    if data.task == "classification":
        probs = out.softmax(dim=1)
        confidence, value = probs.max(dim=1)
        value, confidence = value.numpy(), confidence.numpy()
    else:
        value, confidence = out[:, 0].numpy(), np.ones(len(out), dtype=np.float32)
    return DecisionRegions(gx, gy, value.reshape(grid, grid), confidence.reshape(grid, grid),
                           points, labels, data.task, data.n_classes)


def line_fit(model: nn.Module, data: Dataset, grid: int = 400) -> FunctionFit:
    points, targets = _shown_points(data)
    low, high = float(points.min()), float(points.max())
    xs = np.linspace(low, high, grid, dtype=np.float32)
    prediction = predict(model, torch.from_numpy(xs[:, None]))[:, 0].numpy()
    target = data.target_fn(xs[:, None])[:, 0] if data.target_fn is not None else None
    return FunctionFit(xs, prediction, target, points[:, 0], targets, x_label="x")


def circle_fit(model: nn.Module, data: Dataset, grid: int = 400) -> FunctionFit:
    points, targets = _shown_points(data)
    angles = np.linspace(-math.pi, math.pi, grid, dtype=np.float32)
    circle = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    prediction = predict(model, torch.from_numpy(circle))[:, 0].numpy()
    target = data.target_fn(circle)[:, 0] if data.target_fn is not None else None
    point_angles = np.arctan2(points[:, 1], points[:, 0])
    return FunctionFit(angles, prediction, target, point_angles, targets, x_label="angle")


def confusion(model: nn.Module, data: Dataset) -> Confusion:
    predicted = predict(model, data.x_test).argmax(dim=1).numpy()
    true = data.y_test.cpu().numpy()
    matrix = np.zeros((data.n_classes, data.n_classes), dtype=np.int64)
    np.add.at(matrix, (true, predicted), 1)
    return Confusion(matrix, [str(c) for c in range(data.n_classes)])


def parity(model: nn.Module, data: Dataset) -> Parity:
    prediction = predict(model, data.x_test)[:, 0].numpy()
    return Parity(data.y_test[:, 0].cpu().numpy(), prediction)
