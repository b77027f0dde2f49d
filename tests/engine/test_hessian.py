"""Hessian spectra from HVPs, checked against the dense Hessian of a tiny model
(torch.autograd.functional.hessian + torch.linalg.eigvalsh)."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from engine import hessian, landscape
from engine.models import ModelSpec, build

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def problem():
    """A 2-3-2 tanh MLP (17 parameters, float64) at its random init, on 64 points.

    Its spectrum is well separated at both ends (about -0.21 and 0.71, 0.26).
    """
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2)).double()
    x = torch.randn(64, 2, dtype=torch.float64)
    return model, x, (x[:, 0] * x[:, 1] > 0).long()


def dense_hessian(model, x, y, weights=None):
    """The full Hessian of the mean cross-entropy, by double backward through autograd."""
    params = weights or {k: v.detach() for k, v in model.named_parameters()}
    names, shapes = list(params), [params[k].shape for k in params]
    sizes = [s.numel() for s in shapes]

    def loss_of(vector):
        pieces = dict(zip(names, (p.reshape(s) for p, s in zip(vector.split(sizes), shapes))))
        return F.cross_entropy(functional_call(model, pieces, (x,)), y)

    flat = torch.cat([params[k].reshape(-1) for k in names])
    return torch.autograd.functional.hessian(loss_of, flat)


def largest_magnitude(values):
    return values[values.abs().argmax()].item()


def test_hvp_in_batches_equals_the_dense_hessian_times_v(problem):
    model, x, y = problem
    hvp, _ = hessian.hvp_function(model, "ce", x, y, batch_size=10)
    v = torch.randn(17, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(hvp(v), dense_hessian(model, x, y) @ v)


def test_a_small_memory_limit_splits_the_data_yet_gives_the_same_product(problem):
    model, x, y = problem
    # 17 parameters and 10 activations per sample (3 + 3 + 2, and the container's 2 again),
    # of 8 bytes, counted 4 times: room for about ten samples of the 64 at once
    per_sample = 10 * 8 * hessian.BACKWARD_FACTOR
    limit = 17 * 8 * hessian.BACKWARD_FACTOR + 10 * per_sample
    hvp, _ = hessian.hvp_function(model, "ce", x, y, memory_limit=limit)
    v = torch.randn(17, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(hvp(v), dense_hessian(model, x, y) @ v)


@pytest.mark.parametrize("vectors", [1, 3])
def test_several_vectors_as_rows_equal_the_dense_hessian_times_each(problem, vectors):
    model, x, y = problem
    hvp, _ = hessian.hvp_function(model, "ce", x, y, vectors=vectors)
    V = torch.randn(5, 17, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(hvp(V), V @ dense_hessian(model, x, y))


def test_top_eigenvalues_match_eigvalsh(problem):
    model, x, y = problem
    values, _ = hessian.top_eigenvalues(model, "ce", x, y, k=2, iters=2000, tol=1e-12)
    exact = torch.linalg.eigvalsh(dense_hessian(model, x, y))
    largest = exact[exact.abs().argsort(descending=True)[:2]].sort(descending=True).values
    np.testing.assert_allclose(values, largest.numpy(), rtol=1e-6)


def test_top_eigenvectors_are_eigenvectors(problem):
    model, x, y = problem
    values, vectors = hessian.top_eigenvalues(model, "ce", x, y, k=2, iters=2000, tol=1e-12)
    h = dense_hessian(model, x, y)
    for value, vector in zip(values, vectors):
        v = landscape.flatten(vector)
        assert v.norm().item() == pytest.approx(1.0)
        torch.testing.assert_close(h @ v, value * v, atol=1e-5, rtol=0)


def test_min_eigenvalue_matches_eigvalsh(problem):
    model, x, y = problem
    lowest = hessian.min_eigenvalue(model, "ce", x, y, iters=17, tol=1e-12)
    exact = torch.linalg.eigvalsh(dense_hessian(model, x, y))[0].item()
    assert lowest == pytest.approx(exact, abs=1e-6)


def test_trace_is_within_five_standard_errors_of_the_exact_trace(problem):
    model, x, y = problem
    h = dense_hessian(model, x, y)
    samples = 500
    # Rademacher z: Var[z^T H z] = 2 * sum_{i != j} H_ij^2
    off_diagonal = h - torch.diag(h.diagonal())
    standard_error = (2 * off_diagonal.pow(2).sum() / samples).sqrt().item()
    estimate = hessian.trace(model, "ce", x, y, samples=samples)
    assert abs(estimate - h.trace().item()) < 5 * standard_error


def test_trace_is_exact_for_a_diagonal_hessian():
    # least squares on orthogonal inputs: H = 2/N X^T X is diagonal, so z^T H z = tr H.
    model = nn.Linear(3, 1, bias=False).double()
    x = torch.eye(3, dtype=torch.float64) * torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    y = torch.zeros(3, 1, dtype=torch.float64)
    assert hessian.trace(model, "mse", x, y, samples=3) == pytest.approx(2 * 14 / 3)


def test_density_integrates_to_one_with_its_mass_at_the_true_eigenvalues(problem):
    model, x, y = problem
    grid, density = hessian.density(model, "ce", x, y, iters=17, runs=2)
    assert np.trapezoid(density, grid) == pytest.approx(1.0, abs=1e-3)
    exact = torch.linalg.eigvalsh(dense_hessian(model, x, y)).numpy()
    sigma = 0.01 * (exact.max() - exact.min())
    near_an_eigenvalue = (np.abs(grid[:, None] - exact[None, :]) < 4 * sigma).any(axis=1)
    assert np.trapezoid(density * near_an_eigenvalue, grid) > 0.99


def test_hessian_functions_leave_the_model_as_it_was(problem):
    model, x, y = problem
    model.train()
    before = copy.deepcopy(model.state_dict())
    hessian.top_eigenvalues(model, "ce", x, y, iters=5)
    hessian.trace(model, "ce", x, y, samples=2)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_convexity_map_at_the_centre_is_the_eigenvalue_ratio(problem):
    model, x, y = problem
    d = {k: torch.zeros_like(v) for k, v in model.named_parameters()}
    settings = hessian.ConvexitySettings(xs=[0.0, 1.0, 2.0], ys=[0.0, 1.0], iters=17, tol=1e-12)
    result = hessian.convexity_map(model, "ce", x, y, d, d, settings)
    exact = torch.linalg.eigvalsh(dense_hessian(model, x, y))
    assert result.ratio.shape == (2, 3)
    np.testing.assert_allclose(result.ratio, abs(exact[0] / exact[-1]).item(), rtol=1e-4)


@pytest.mark.parametrize("seed", range(5))
def test_the_maps_lanczos_finds_a_small_negative_eigenvalue_beside_a_steep_direction(seed):
    """The spectrum of a steep point of a no-skip ResNet: lambda_max 47,000, a bulk in [0, 50]
    and one eigenvalue -112. Stopping when the Ritz values stall missed it (10.4 at seed 0)."""
    bulk = np.random.default_rng(0).uniform(0, 50, 2997)
    spectrum = torch.tensor(np.concatenate([[47000.0, 30000.0], bulk, [-112.0]]), dtype=torch.float64)
    start = torch.randn(3000, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    tridiagonal = hessian.lanczos(lambda v: spectrum * v, start, 50, hessian.ConvexitySettings().tol)
    ritz = np.linalg.eigvalsh(hessian._tridiagonal(*tridiagonal))
    assert ritz[0] == pytest.approx(-112.0, abs=0.1) and ritz[-1] == pytest.approx(47000.0)


def test_sharpness_gives_each_checkpoints_top_eigenvalue(problem):
    model, x, y = problem
    start = {k: v.detach() * 0.5 for k, v in model.named_parameters()}
    end = {k: v.detach() for k, v in model.named_parameters()}
    result = hessian.sharpness(model, "ce", x, y, {0: start, 100: end}, lr=0.5, iters=2000,
                               tol=1e-12)
    exact = [largest_magnitude(torch.linalg.eigvalsh(dense_hessian(model, x, y, w)))
             for w in (start, end)]
    assert result.eigenvalues.shape == (2, 1)
    np.testing.assert_allclose(result.eigenvalues[:, 0], exact, rtol=1e-6)


def test_hvp_works_for_a_centered_model():
    torch.manual_seed(3)
    model = build(ModelSpec(width=4, depth=1, alpha=2.0), (2,), 2).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x, y = torch.randn(20, 2, dtype=torch.float64), torch.randint(0, 2, (20,))
    hvp, w = hessian.hvp_function(model, "ce", x, y)
    v = torch.randn(landscape.flatten(w).numel(), dtype=torch.float64)
    torch.testing.assert_close(hvp(v), dense_hessian(model, x, y) @ v)


@pytest.mark.parametrize("settings, sentence", [
    (dict(xs=[]), "xs must be a non-empty list of finite numbers"),
    (dict(ys=[0.0, float("nan")]), "ys must be a non-empty list of finite numbers"),
    (dict(iters=1), "at least 2 Lanczos steps"),
    (dict(tol=-1.0), "tolerance"),
])
def test_bad_convexity_settings_are_a_sentence(settings, sentence):
    with pytest.raises(ValueError, match=sentence):
        hessian.ConvexitySettings(**settings)


# ---------------------------------------------------------------- progress


def reports_of(run):
    """The shares a computation reports, by calling run(progress)."""
    shares = []
    run(shares.append)
    return shares


@pytest.mark.parametrize("computation", [
    lambda model, x, y, progress: hessian.top_eigenvalues(model, "ce", x, y, k=2, iters=10, progress=progress),
    lambda model, x, y, progress: hessian.min_eigenvalue(model, "ce", x, y, iters=10, progress=progress),
    lambda model, x, y, progress: hessian.trace(model, "ce", x, y, samples=5, progress=progress),
    lambda model, x, y, progress: hessian.density(model, "ce", x, y, iters=5, runs=2, progress=progress),
    lambda model, x, y, progress: hessian.sharpness(model, "ce", x, y, [model.state_dict()] * 2, iters=5,
                                                    progress=progress),
    lambda model, x, y, progress: hessian.convexity_map(
        model, "ce", x, y, *[{k: torch.zeros_like(v) for k, v in model.named_parameters()}] * 2,
        hessian.ConvexitySettings(xs=[0.0, 1.0], iters=5), progress=progress),
], ids=["top_eigenvalues", "min_eigenvalue", "trace", "density", "sharpness", "convexity_map"])
def test_progress_rises_to_one(problem, computation):
    model, x, y = problem
    shares = reports_of(lambda progress: computation(model, x, y, progress))
    assert len(shares) > 2 and shares[-1] == 1.0
    assert all(0 < a <= b <= 1 for a, b in zip(shares, shares[1:]))


def test_a_progress_callback_that_raises_stops_the_computation(problem):
    model, x, y = problem
    calls = []

    def cancel_at_the_third(share):
        calls.append(share)
        if len(calls) == 3:
            raise InterruptedError("cancelled")

    with pytest.raises(InterruptedError):
        hessian.trace(model, "ce", x, y, samples=50, progress=cancel_at_the_third)
    assert len(calls) == 3


# ---------------------------------------------------------------- a conv net with batch norm


@pytest.fixture(scope="module")
def bn_problem():
    """A conv net with BatchNorm (123 parameters, float64), in train mode, with running
    statistics away from 0 and 1, and its dense Hessian in eval mode (a separate computation:
    `functional_call` with the running statistics, through torch.autograd.functional.hessian)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Tanh(), nn.Flatten(),
                          nn.Linear(2 * 4 * 4, 3)).double()
    x = torch.randn(20, 1, 6, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (20,))
    with torch.no_grad():
        model(2 * x + 1)  # train mode: the running statistics move
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
    names, shapes = list(params), [p.shape for p in params.values()]

    def loss_of(vector):
        pieces = dict(zip(names, (p.reshape(s) for p, s in zip(vector.split([s.numel() for s in shapes]), shapes))))
        return F.cross_entropy(functional_call(model, (pieces, buffers), (x,)), y)

    model.eval()
    h = torch.autograd.functional.hessian(loss_of, torch.cat([p.reshape(-1) for p in params.values()]))
    model.train()
    return model, x, y, h


def test_bn_hvp_equals_the_dense_eval_mode_hessian_times_v(bn_problem):
    model, x, y, h = bn_problem
    hvp, _ = hessian.hvp_function(model, "ce", x, y, batch_size=7)
    v = torch.randn(len(h), dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(hvp(v), h @ v)


def test_bn_top_eigenvalue_matches_eigvalsh(bn_problem):
    model, x, y, h = bn_problem
    values, _ = hessian.top_eigenvalues(model, "ce", x, y, k=1, iters=3000, tol=1e-13)
    assert values[0] == pytest.approx(largest_magnitude(torch.linalg.eigvalsh(h)), rel=1e-5)


def test_bn_trace_is_within_five_standard_errors_of_the_exact_trace(bn_problem):
    model, x, y, h = bn_problem
    samples = 200
    off_diagonal = h - torch.diag(h.diagonal())
    standard_error = (2 * off_diagonal.pow(2).sum() / samples).sqrt().item()
    assert abs(hessian.trace(model, "ce", x, y, samples=samples) - h.trace().item()) < 5 * standard_error


def test_bn_density_has_its_mass_at_the_true_eigenvalues(bn_problem):
    model, x, y, h = bn_problem
    grid, density = hessian.density(model, "ce", x, y, iters=len(h))
    exact = torch.linalg.eigvalsh(h).numpy()
    sigma = 0.01 * (exact.max() - exact.min())
    near_an_eigenvalue = (np.abs(grid[:, None] - exact[None, :]) < 4 * sigma).any(axis=1)
    assert np.trapezoid(density * near_an_eigenvalue, grid) > 0.99


def test_bn_model_keeps_its_mode_and_running_statistics(bn_problem):
    model, x, y, _ = bn_problem
    before = copy.deepcopy(model.state_dict())
    hessian.trace(model, "ce", x, y, samples=3)
    hessian.top_eigenvalues(model, "ce", x, y, iters=3)
    assert model.training and model[1].training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_top_eigenvalue_on_the_gpu_equals_the_one_on_the_cpu(problem):
    model, x, y = problem
    on_cpu, _ = hessian.top_eigenvalues(model, "ce", x, y, iters=200, tol=1e-10)
    on_gpu, _ = hessian.top_eigenvalues(copy.deepcopy(model).cuda(), "ce", x, y, iters=200,
                                        tol=1e-10)
    np.testing.assert_allclose(on_gpu, on_cpu, rtol=1e-6)
