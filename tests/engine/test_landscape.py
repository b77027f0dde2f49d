"""Loss landscapes: directions, surfaces, paths and trajectory planes, each checked against a
plain reference (set the weights with load_state_dict, run the model, take the loss)."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine import landscape
from engine.models import ModelSpec, build

XS, YS = np.linspace(-1.0, 1.0, 5), np.array([-0.5, 0.0, 0.75])  # a non-square 3 x 5 grid


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def problem():
    """A small MLP (with biases) on 60 points of three classes."""
    torch.manual_seed(0)
    x = torch.randn(60, 2)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return build(ModelSpec(width=8, depth=2, seed=1), (2,), 3), x, y


def reference_loss(model, weights, x, y, loss=F.cross_entropy):
    """The loss and accuracy of a copy of `model` with `weights` loaded, on all of (x, y)."""
    m = copy.deepcopy(model).eval()
    m.load_state_dict({**m.state_dict(), **weights})
    with torch.no_grad():
        out = m(x)
    return loss(out, y).item(), (out.argmax(1) == y).float().mean().item()


def reference_surface(model, x, y, d1, d2, xs, ys):
    """The loss at w + a d1 + b d2, one grid point at a time."""
    w = dict(model.named_parameters())
    grid = [[reference_loss(model, {k: w[k].detach() + a * d1[k] + b * d2[k] for k in w}, x, y)
             for a in xs] for b in ys]
    return np.array(grid)  # (len(ys), len(xs), 2): loss and accuracy


def plane_states(model, n=6, seed=0):
    """Checkpoints final + a_t u + b_t v: a trajectory lying exactly in a plane."""
    g = torch.Generator().manual_seed(seed)
    final = {k: v.detach().clone() for k, v in model.named_parameters()}
    u = {k: torch.randn(v.shape, generator=g) for k, v in final.items()}
    v = {k: torch.randn(t.shape, generator=g) for k, t in final.items()}
    coefficients = torch.randn(n, 2, generator=g)
    return final, [{k: final[k] + a * u[k] + b * v[k] for k in final} for a, b in coefficients]


# ---------------------------------------------------------------- directions


def test_filter_normalized_slices_have_the_weights_slice_norms(problem):
    model = problem[0]
    d = landscape.random_direction(model, norm="filter")
    for name, w in model.named_parameters():
        if w.dim() > 1:
            torch.testing.assert_close(d[name].norm(dim=1), w.detach().norm(dim=1))


def test_layer_normalized_tensors_have_the_weights_norms(problem):
    model = problem[0]
    d = landscape.random_direction(model, norm="layer")
    for name, w in model.named_parameters():
        if w.dim() > 1:
            torch.testing.assert_close(d[name].norm(), w.detach().norm())


def test_model_normalized_direction_has_the_weights_norm(problem):
    model = problem[0]
    d = landscape.random_direction(model, norm="model")
    matrices = [n for n, w in model.named_parameters() if w.dim() > 1]
    norm = lambda ts: torch.cat([t.reshape(-1) for t in ts]).norm()  # noqa: E731
    torch.testing.assert_close(norm([d[n] for n in matrices]),
                               norm([dict(model.named_parameters())[n].detach() for n in matrices]))


def test_biases_are_zero_under_biasbn_and_equal_the_weights_otherwise(problem):
    model = copy.deepcopy(problem[0])
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.1)  # biases start at zero; make them nonzero
    ignored = landscape.random_direction(model, ignore="biasbn")
    kept = landscape.random_direction(model, ignore=None)
    for name, w in model.named_parameters():
        if w.dim() == 1:
            assert torch.count_nonzero(ignored[name]) == 0
            assert torch.equal(kept[name], w.detach())


def test_same_seed_gives_the_same_direction_and_another_seed_another(problem):
    model = problem[0]
    a, b = landscape.random_direction(model, seed=3), landscape.random_direction(model, seed=3)
    c = landscape.random_direction(model, seed=4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["layers.fc1.weight"], c["layers.fc1.weight"])


def test_direction_is_keyed_like_named_parameters(problem):
    model = problem[0]
    d = landscape.random_direction(model)
    expected = [(k, p.shape) for k, p in model.named_parameters()]
    assert [(k, v.shape) for k, v in d.items()] == expected


# ---------------------------------------------------------------- surfaces


def test_surface_equals_a_loop_that_sets_the_weights_on_a_non_square_grid(problem):
    model, x, y = problem
    d1, d2 = landscape.random_direction(model, seed=1), landscape.random_direction(model, seed=2)
    result = landscape.surface(model, "ce", x, y, d1, d2, xs=XS, ys=YS)
    expected = reference_surface(model, x, y, d1, d2, XS, YS)
    assert result.loss.shape == (3, 5)
    np.testing.assert_allclose(result.loss, expected[..., 0], atol=1e-5)
    np.testing.assert_allclose(result.accuracy, expected[..., 1], atol=1e-6)


def test_surface_of_a_centered_model_equals_the_loop():
    torch.manual_seed(1)
    x, y = torch.randn(40, 2), torch.randint(0, 2, (40,))
    model = build(ModelSpec(width=8, depth=1, alpha=3.0), (2,), 2)
    with torch.no_grad():  # move away from w0, so that the output is not zero
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    d1, d2 = landscape.random_direction(model, seed=1), landscape.random_direction(model, seed=2)
    result = landscape.surface(model, "ce", x, y, d1, d2, xs=XS, ys=YS)
    np.testing.assert_allclose(result.loss, reference_surface(model, x, y, d1, d2, XS, YS)[..., 0],
                               atol=1e-5)


def test_linear_chains_are_the_mlp_and_plain_stacks_of_linear_layers(problem):
    stack = nn.Sequential(nn.Linear(2, 4), nn.Sequential(nn.Tanh(), nn.Linear(4, 3)))
    assert [p for p, _ in landscape.linear_chain(problem[0]).layers][0] == "layers.fc1."
    assert [p for p, _ in landscape.linear_chain(stack).layers] == ["0.", "1.0.", "1.1."]
    residual = build(ModelSpec(kind="resmlp", width=8, depth=1), (2,), 3)
    centered = build(ModelSpec(width=8, depth=1, alpha=2.0), (2,), 3)
    hooked = nn.Sequential(nn.Linear(2, 3))
    hooked.register_forward_hook(lambda *args: None)
    assert all(landscape.linear_chain(m) is None for m in (residual, centered, hooked))


@pytest.mark.parametrize("spec", [ModelSpec(width=8, depth=2, parametrization="ntk", seed=3),
                                  ModelSpec(width=8, depth=1, activation="tanh", bias=False),
                                  ModelSpec(width=8, depth=1, activation="quadratic", bias=False),
                                  ModelSpec(kind="resmlp", width=8, depth=1, seed=2)])
def test_surface_equals_the_loop_for_chains_and_for_the_vmap_path(problem, spec):
    _, x, y = problem
    model = build(spec, (2,), 3)
    with torch.no_grad():  # nonzero biases, which a chain adds in place
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    d1 = landscape.random_direction(model, seed=1, ignore=None)
    d2 = landscape.random_direction(model, seed=2)
    result = landscape.surface(model, "ce", x, y, d1, d2, xs=XS, ys=YS)
    expected = reference_surface(model, x, y, d1, d2, XS, YS)
    np.testing.assert_allclose(result.loss, expected[..., 0], atol=1e-5)
    np.testing.assert_allclose(result.accuracy, expected[..., 1], atol=1e-6)


def test_surface_of_a_chain_with_a_custom_loss_equals_the_loop(problem):
    model, x, y = problem
    d = landscape.random_direction(model, seed=4)
    smoothed = lambda out, target: F.cross_entropy(out, target, label_smoothing=0.2)  # noqa: E731
    result = landscape.surface(model, smoothed, x, y, d, xs=XS)
    w = {k: p.detach() for k, p in model.named_parameters()}
    expected = [reference_loss(model, {k: w[k] + a * d[k] for k in w}, x, y, loss=smoothed)[0]
                for a in XS]
    np.testing.assert_allclose(result.loss, expected, atol=1e-5)


def test_surface_leaves_the_model_exactly_as_it_was(problem):
    model, x, y = problem
    model.train()
    before = copy.deepcopy(model.state_dict())
    landscape.surface(model, "ce", x, y, landscape.random_direction(model), xs=XS)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_line_has_one_loss_per_coordinate_and_equals_the_loop(problem):
    model, x, y = problem
    d = landscape.random_direction(model, seed=5)
    zero = {k: torch.zeros_like(v) for k, v in d.items()}
    result = landscape.surface(model, "ce", x, y, d, xs=XS)
    assert result.loss.shape == (5,)
    expected = reference_surface(model, x, y, d, zero, XS, [0.0])[0, :, 0]
    np.testing.assert_allclose(result.loss, expected, atol=1e-5)


def test_small_batches_and_chunks_give_the_same_surface(problem, monkeypatch):
    model, x, y = problem
    d1, d2 = landscape.random_direction(model, seed=1), landscape.random_direction(model, seed=2)
    whole = landscape.surface(model, "ce", x, y, d1, d2, xs=XS, ys=YS)
    monkeypatch.setattr(landscape, "CPU_MEMORY_BUDGET", 5_000)  # a few points per chunk
    monkeypatch.setattr(landscape, "CHAIN_CHUNK_BYTES", 5_000)  # a chain's, too
    monkeypatch.setattr(landscape, "CHAIN_CACHE_BYTES", 5_000)  # and its passes through the layers
    pieces = landscape.surface(model, "ce", x, y, d1, d2, xs=XS, ys=YS, batch_size=7)
    assert pieces.settings["points_per_pass"] < 15 and pieces.settings["batch_size"] == 7
    np.testing.assert_allclose(pieces.loss, whole.loss, atol=1e-6)


def test_plan_splits_the_samples_only_beyond_the_batch_budget():
    # one point: 100 bytes of weights + 1000 samples of 10 bytes, against a 5000-byte budget
    assert landscape.plan_chunks(50, 1000, 100, 10, 5000) == (1, 250)
    assert landscape.plan_chunks(50, 1000, 100, 10, 5000, batch_budget=20_000) == (1, 1000)
    assert landscape.plan_chunks(50, 1000, 100, 10, 50_000) == (4, 1000)


def test_regression_surface_uses_mse_and_has_no_accuracy():
    torch.manual_seed(2)
    x = torch.randn(30, 3)
    y = x.sum(1, keepdim=True)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    d = landscape.random_direction(model, seed=1)
    result = landscape.surface(model, "mse", x.numpy(), y.numpy(), d, xs=[0.0, 0.5])
    moved = {k: p.detach() + 0.5 * d[k] for k, p in model.named_parameters()}
    expected = reference_loss(model, moved, x, y, loss=F.mse_loss)[0]
    assert result.accuracy is None
    assert result.loss[1] == pytest.approx(expected, abs=1e-6)


def test_losses_at_checkpoints_equal_the_loop(problem):
    model, x, y = problem
    _, states = plane_states(model, n=3)
    losses, accuracy = landscape.losses_at(model, "ce", x, y, states)
    expected = np.array([reference_loss(model, s, x, y) for s in states])
    np.testing.assert_allclose(losses, expected[:, 0], atol=1e-5)
    np.testing.assert_allclose(accuracy, expected[:, 1])


# ---------------------------------------------------------------- paths and planes


def test_linear_path_endpoints_are_the_two_models_losses(problem):
    model, x, y = problem
    other = build(ModelSpec(width=8, depth=2, seed=7), (2,), 3)
    path = landscape.linear_path(model, other, "ce", x, y, ts=np.linspace(0, 1, 5))
    assert path.loss[0] == pytest.approx(reference_loss(model, {}, x, y)[0], abs=1e-5)
    assert path.loss[-1] == pytest.approx(reference_loss(other, {}, x, y)[0], abs=1e-5)


def test_linear_path_from_a_model_to_itself_has_no_barrier(problem):
    model, x, y = problem
    path = landscape.linear_path(model, model, "ce", x, y)
    assert path.barrier == pytest.approx(0.0, abs=1e-6)


def test_linear_path_barrier_is_the_bump_above_the_chord(problem):
    model, x, y = problem
    other = build(ModelSpec(width=8, depth=2, seed=7), (2,), 3)
    ts = np.linspace(0, 1, 11)
    path = landscape.linear_path(model, other, "ce", x, y, ts=ts)
    a, b = dict(model.named_parameters()), dict(other.named_parameters())
    between = [{k: (1 - t) * a[k].detach() + t * b[k].detach() for k in a} for t in ts]
    losses = np.array([reference_loss(model, w, x, y)[0] for w in between])
    chord = (1 - ts) * losses[0] + ts * losses[-1]
    assert path.barrier == pytest.approx(np.max(losses - chord), abs=1e-5)


def scalar_chain(u, v):
    """f(x) = v u x: two one-weight linear layers. Fitting y = x under MSE, the straight path
    from (1, 1) to (-1, -1) has the product (1 - 2t)^2, so L(t) = m ((1 - 2t)^2 - 1)^2 =
    16 m t^2 (1 - t)^2 with m = mean(x^2): zero at both ends, a bump of m at t = 1/2, and
    25 m / 16 at the extrapolated t = 1.25."""
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False)).double()
    with torch.no_grad():
        model[0].weight.fill_(u)
        model[1].weight.fill_(v)
    return model


def test_linear_path_follows_the_closed_form_loss_of_a_scalar_chain():
    x = torch.tensor([[1.0], [-2.0]], dtype=torch.float64)  # m = mean(x^2) = 2.5
    ts = np.linspace(-0.25, 1.25, 7)
    path = landscape.linear_path(scalar_chain(1, 1), scalar_chain(-1, -1), "mse", x, x, ts=ts)
    np.testing.assert_allclose(path.loss, 16 * 2.5 * ts ** 2 * (1 - ts) ** 2, atol=1e-12)


def test_linear_path_barrier_counts_only_the_points_between_the_endpoints():
    x = torch.tensor([[1.0], [-2.0]], dtype=torch.float64)  # m = 2.5; L(1.25) = 3.90625
    path = landscape.linear_path(scalar_chain(1, 1), scalar_chain(-1, -1), "mse", x, x,
                                 ts=np.linspace(-0.25, 1.25, 7))
    assert path.barrier == pytest.approx(2.5, abs=1e-12)


def test_plane_through_three_models_puts_them_at_their_coordinates():
    w0, w1, w2 = ({k: v.detach() for k, v in build(ModelSpec(width=8, depth=2, seed=s), (2,), 3)
                   .named_parameters()} for s in (1, 2, 3))
    origin, d1, d2, coords = landscape.plane_through(w0, w1, w2)
    for w, (a, b) in zip((w0, w1, w2), coords):
        for k in w:
            torch.testing.assert_close(origin[k] + a * d1[k] + b * d2[k], w[k], atol=1e-5, rtol=0)
    dot = sum((d1[k] * d2[k]).sum() for k in d1)
    length = lambda d: sum((t ** 2).sum() for t in d.values()).sqrt()  # noqa: E731
    assert abs(dot) < 1e-4 * length(d1) ** 2
    torch.testing.assert_close(length(d1), length(d2))


def test_surface_on_the_plane_of_three_models_has_each_models_loss_at_its_mark(problem):
    _, x, y = problem
    models = [build(ModelSpec(width=8, depth=2, seed=s), (2,), 3) for s in (1, 2, 3)]
    plane = landscape.plane_through(*models)
    xs, ys = np.unique(plane.coords[:, 0]), np.unique(plane.coords[:, 1])
    result = landscape.surface(models[0], "ce", x, y, plane.d1, plane.d2, xs=xs, ys=ys,
                               center=plane.origin)
    for model, (a, b) in zip(models, plane.coords):
        on_plane = result.loss[np.searchsorted(ys, b), np.searchsorted(xs, a)]
        assert on_plane == pytest.approx(reference_loss(model, {}, x, y)[0], abs=1e-5)


def test_pca_projection_is_exact_for_a_trajectory_in_a_plane(problem):
    model = problem[0]
    final, states = plane_states(model)
    plane = landscape.pca_directions(states, model)
    assert plane.explained_variance.sum() == pytest.approx(1.0, abs=1e-6)
    for state, (a, b) in zip(states, plane.coords):
        for k in final:
            torch.testing.assert_close(final[k] + a * plane.d1[k] + b * plane.d2[k], state[k],
                                       atol=1e-5, rtol=0)


def test_pca_directions_use_only_trainable_parameters():
    model = build(ModelSpec(width=8, depth=1, alpha=2.0), (2,), 2)  # w0 is a buffer
    final, states = plane_states(model, n=3)
    full_states = {step: {**model.state_dict(), **s} for step, s in zip((10, 20, 30), states)}
    plane = landscape.pca_directions(full_states, model)
    assert list(plane.d1) == [n for n, _ in model.named_parameters()]
    np.testing.assert_array_equal(plane.steps, [10, 20, 30])


def test_faithfulness_of_an_in_plane_trajectory_matches_the_measured_loss(problem):
    model, x, y = problem
    _, states = plane_states(model, n=4)
    plane = landscape.pca_directions(states, model)
    result = landscape.trajectory_faithfulness(model, "ce", x, y, states, plane)
    expected = [reference_loss(model, s, x, y)[0] for s in states]
    np.testing.assert_allclose(result.loss, expected, atol=1e-5)
    np.testing.assert_allclose(result.loss_on_plane, expected, atol=1e-4)


def test_grid_around_covers_the_points_and_the_origin():
    xs, ys = landscape.grid_around(np.array([[1.0, 2.0], [3.0, -1.0]]), n=11)
    assert xs.min() < 0 < 3 < xs.max() and ys.min() < -1 < 2 < ys.max() and len(xs) == 11


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_surface_on_the_gpu_equals_the_surface_on_the_cpu(problem):
    model, x, y = problem
    d1, d2 = landscape.random_direction(model, seed=1), landscape.random_direction(model, seed=2)
    on_cpu = landscape.surface(model, "ce", x, y, d1, d2, xs=XS, ys=YS)
    gpu_model = copy.deepcopy(model).cuda()
    gpu_d1, gpu_d2 = (landscape.random_direction(gpu_model, seed=s) for s in (1, 2))
    on_gpu = landscape.surface(gpu_model, "ce", x, y, gpu_d1, gpu_d2, xs=XS, ys=YS)
    np.testing.assert_allclose(on_gpu.loss, on_cpu.loss, atol=1e-5)
