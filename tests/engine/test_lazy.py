"""Lazy-versus-rich measures against plain numpy formulas."""
import numpy as np
import pytest
import torch

from engine.lazy import (
    kernel_alignment, kernel_distance, kernel_trajectory, relative_kernel_change, relative_weight_change,
)
from engine.models import Centered, ModelSpec, build


def random_kernel(n=6, seed=0):
    A = np.random.default_rng(seed).normal(size=(n, n))
    return A @ A.T


def numpy_alignment(K, Y):
    """<HKH, H YY^T H>_F / (||HKH||_F ||H YY^T H||_F) with explicit centring matrices."""
    H = np.eye(len(K)) - np.ones((len(K), len(K))) / len(K)
    Kc, L = H @ K @ H, H @ Y @ Y.T @ H
    return np.sum(Kc * L) / (np.linalg.norm(Kc) * np.linalg.norm(L))


def two_models():
    spec = ModelSpec(width=5, depth=2)
    model0, model = build(spec, (3,), 2), build(spec, (3,), 2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p) + 0.05)
    return model0, model


def test_relative_weight_change_matches_numpy_in_total_and_per_layer():
    model0, model = two_models()
    w0 = {n: p.detach().numpy() for n, p in model0.named_parameters()}
    w = {n: p.detach().numpy() for n, p in model.named_parameters()}
    change = relative_weight_change(model0, model)
    flat = lambda d, names: np.concatenate([d[n].ravel() for n in names])  # noqa: E731
    total = np.linalg.norm(flat(w, w) - flat(w0, w)) / np.linalg.norm(flat(w0, w))
    assert change.total == pytest.approx(total)
    fc2 = ["layers.fc2.weight", "layers.fc2.bias"]
    expected = np.linalg.norm(flat(w, fc2) - flat(w0, fc2)) / np.linalg.norm(flat(w0, fc2))
    assert sorted(change.layers) == ["layers.fc1", "layers.fc2", "layers.out"]
    assert change.layers["layers.fc2"] == pytest.approx(expected)


def test_state_dicts_and_modules_give_the_same_weight_change():
    model0, model = two_models()
    from_states = relative_weight_change(model0.state_dict(), model.state_dict())
    assert from_states == relative_weight_change(model0, model)


def test_a_module_leaves_out_the_frozen_weights_of_a_centred_model():
    model0, model = two_models()
    centred0, centred = Centered(model0, 2.0), Centered(model, 2.0)
    assert relative_weight_change(centred0.state_dict(), centred).total == pytest.approx(
        relative_weight_change(model0, model).total)


def test_relative_kernel_change_matches_numpy():
    K0, K = random_kernel(), random_kernel(seed=1)
    assert relative_kernel_change(K0, K) == pytest.approx(np.linalg.norm(K - K0) / np.linalg.norm(K0))


def test_kernel_distance_matches_numpy():
    K0, K = random_kernel(), random_kernel(seed=1)
    expected = 1 - np.sum(K0 * K) / (np.linalg.norm(K0) * np.linalg.norm(K))
    assert kernel_distance(torch.tensor(K0), K) == pytest.approx(expected)


def test_kernel_distance_ignores_scale():
    K = random_kernel()
    assert kernel_distance(K, 7.5 * K) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("columns", [1, 3])
def test_kernel_alignment_matches_numpy(columns):
    K, Y = random_kernel(), np.random.default_rng(2).normal(size=(6, columns))
    y = Y[:, 0] if columns == 1 else Y
    assert kernel_alignment(K, y) == pytest.approx(numpy_alignment(K, Y))


def test_kernel_alignment_of_class_labels_uses_one_hot_targets():
    K, labels = random_kernel(), np.array([0, 1, 2, 1, 0, 2])
    assert kernel_alignment(K, labels) == pytest.approx(numpy_alignment(K, np.eye(3)[labels]))


def test_target_kernel_aligns_perfectly_even_off_centre():
    y = np.random.default_rng(3).normal(size=8) + 2.0
    assert kernel_alignment(np.outer(y, y), y) == pytest.approx(1.0)


def test_kernel_trajectory_starts_at_zero_change():
    model0, model = two_models()
    checkpoints = {0: model0.state_dict(), 10: model.state_dict()}
    x, y = torch.randn(8, 3), torch.randn(8, 2)
    trajectory = kernel_trajectory(model0, checkpoints, x, y, k=3)
    assert trajectory.steps.tolist() == [0, 10]
    assert trajectory.relative_change[0] == 0 and trajectory.weight_change[0] == 0
    assert trajectory.subspace_overlap[0] == pytest.approx(1.0)
    assert trajectory.distance[1] > 0 and trajectory.alignment.shape == (2,)
