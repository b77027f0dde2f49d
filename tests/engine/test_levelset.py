"""Level-set traversal, checked on a linear classifier (whose level sets are hyperplanes, so
the answers are known in closed form) and on a small tanh MLP (against recomputed softmaxes)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine import levelset
from engine.results import LevelSetPath, from_arrays, to_arrays

pytestmark = pytest.mark.usefixtures("one_thread")


def linear_model(d=5, seed=0):
    """A float64 two-class linear classifier; its level sets are hyperplanes normal to w1 - w0."""
    torch.manual_seed(seed)
    return nn.Linear(d, 2).double()


def normal(model):
    """The unit normal (w0 - w1) of the linear model's level sets, as numpy."""
    n = (model.weight[0] - model.weight[1]).detach().numpy()
    return n / np.linalg.norm(n)


def mlp(d=6, classes=3, seed=0):
    """A tanh MLP with weights scaled up 5 times, so its level sets curve within a step."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, classes))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(5.0)
    return model


# Large steps on the curved MLP: some proposals lose more confidence than the threshold allows.
CURVED = dict(step_size=0.3, eps=0.01, threshold=0.02)


def box_points(n, d=6, seed=1):
    return torch.rand(n, d, generator=torch.Generator().manual_seed(seed))


def constant_model(logits=(1.0, 0.0), d=4):
    """Logits that ignore the input: every point has the same confidence."""
    model = nn.Linear(d, len(logits))
    with torch.no_grad():
        model.weight.zero_()
        model.bias.copy_(torch.tensor(logits))
    return model


# ---------------------------------------------------------------- the step


def test_projected_step_is_orthogonal_to_the_gradient():
    g, v = torch.randn(8, 30, dtype=torch.float64), torch.randn(8, 30, dtype=torch.float64)
    v_perp = levelset.orthogonal_component(v, g)
    cosines = (v_perp * g).sum(1) / (v_perp.norm(dim=1) * g.norm(dim=1))
    assert cosines.abs().max() < 1e-14


def test_projected_step_keeps_the_whole_move_where_the_gradient_is_zero():
    v = torch.randn(3, 4, dtype=torch.float64)
    assert torch.equal(levelset.orthogonal_component(v, torch.zeros_like(v)), v)


def test_the_input_gradient_of_a_linear_classifier_is_normal_to_its_level_sets():
    model = linear_model()
    x = torch.randn(4, 5, dtype=torch.float64)
    _, g = levelset.confidence_and_gradient(model, x, torch.zeros(4, dtype=torch.long))
    unit = g.numpy() / np.linalg.norm(g.numpy(), axis=1, keepdims=True)
    np.testing.assert_allclose(np.abs(unit @ normal(model)), 1.0, atol=1e-12)


def test_restoring_step_is_clipped_to_eps():
    delta = levelset.restoring_step(torch.zeros(1, 3), torch.tensor([[10.0, -10.0, 0.2]]), 0.1)
    np.testing.assert_allclose(delta.numpy(), [[0.1, -0.1, 0.01]], rtol=1e-6)


# ---------------------------------------------------------------- traversal on a linear model


def test_linear_path_converges_geometrically_to_the_targets_projection_on_the_level_set():
    """Inside the hyperplane each step removes the share eta of the way to x_t's projection."""
    model, eta = linear_model(), 0.1
    source, target = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    n = normal(model)
    projection = target.numpy() - n * (n @ (target - source).numpy())
    result = levelset.traverse(model, source, target, steps=30, step_size=eta, eps=0.0,
                               threshold=1e-6, bounds=None)
    distance = np.linalg.norm(result.path - projection, axis=1)
    np.testing.assert_allclose(distance, distance[0] * (1 - eta) ** np.arange(31), rtol=1e-8)


def test_linear_path_keeps_the_source_confidence_to_float_precision():
    model = linear_model()
    result = levelset.traverse(model, torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64),
                               steps=50, eps=0.0, threshold=1e-9, bounds=None)
    assert result.accepted.all()
    np.testing.assert_allclose(result.confidence, result.confidence[0], atol=1e-12)


# ---------------------------------------------------------------- traversal on an MLP


def test_confidence_stays_within_the_threshold_of_the_source_confidence():
    result = levelset.traverse(mlp(), box_points(8), box_points(8, seed=2), steps=40, **CURVED)
    assert (result.confidence[0] - result.confidence < CURVED["threshold"]).all()
    assert not result.accepted.all()  # the threshold did turn proposals down


def test_reported_confidences_are_the_models_softmax_at_the_recorded_points():
    model = mlp()
    result = levelset.traverse(model, box_points(4), box_points(4, seed=2), steps=20, step_size=0.1)
    with torch.no_grad():
        p = F.softmax(model(torch.as_tensor(result.path)), dim=-1).numpy()
    recomputed = np.take_along_axis(p, np.broadcast_to(result.source_class[None, :, None], (21, 4, 1)), -1)
    np.testing.assert_allclose(result.confidence, recomputed[..., 0], atol=1e-6)


def test_box_constraints_hold_at_every_point():
    low, high = 0.2, 0.8
    source = 0.2 + 0.6 * box_points(6)
    result = levelset.traverse(mlp(), source, 3 * box_points(6, seed=2) - 1, steps=40,
                               step_size=0.2, eps=0.1, threshold=0.5, bounds=(low, high))
    assert result.path.min() >= low and result.path.max() <= high
    assert result.accepted.any()


def test_batched_traversal_equals_one_pair_at_a_time():
    model, sources, targets = mlp(), box_points(8), box_points(8, seed=2)
    settings = dict(steps=30, **CURVED)
    batch = levelset.traverse(model, sources, targets, **settings)
    assert batch.accepted.all(axis=0).any() and not batch.accepted.all()  # pairs differ
    for i in range(8):
        one = levelset.traverse(model, sources[i], targets[i], **settings)
        np.testing.assert_allclose(batch.path[:, i], one.path, atol=1e-6)
        np.testing.assert_allclose(batch.confidence[:, i], one.confidence, atol=1e-6)
        np.testing.assert_array_equal(batch.accepted[:, i], one.accepted)


def test_distances_to_the_target_are_l2_and_linf_of_the_difference():
    result = levelset.traverse(mlp(), box_points(3), box_points(3, seed=2), steps=10, step_size=0.1)
    difference = result.path - result.target[None]
    np.testing.assert_allclose(result.l2, np.linalg.norm(difference, axis=-1), rtol=1e-5)
    np.testing.assert_allclose(result.linf, np.abs(difference).max(axis=-1), rtol=1e-6)


def test_source_class_is_the_prediction_unless_given():
    model, sources = mlp(), box_points(6)
    predicted = model(sources).argmax(1).numpy()
    assert np.array_equal(levelset.traverse(model, sources, sources, steps=1).source_class, predicted)
    chosen = levelset.traverse(model, sources, sources, steps=1, source_class=2)
    assert np.array_equal(chosen.source_class, np.full(6, 2))


def test_one_pair_gives_a_path_of_points_and_a_confidence_per_point():
    result = levelset.traverse(mlp(), box_points(1)[0], box_points(1, seed=2)[0], steps=7)
    assert result.path.shape == (8, 6) and result.confidence.shape == (8,)
    assert result.accepted.shape == (7,) and not result.batched


def test_record_every_keeps_every_kth_point_and_the_last():
    result = levelset.traverse(mlp(), box_points(2), box_points(2, seed=2), steps=10, record_every=3)
    assert result.step.tolist() == [0, 3, 6, 9, 10]
    assert result.path.shape == (5, 2, 6) and result.accepted.shape == (10, 2)


def test_images_are_measured_with_ssim_and_reshaped():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    sources, targets = torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8)
    result = levelset.traverse(model, sources, targets, steps=5, input_shape=(1, 8, 8))
    assert result.ssim.shape == (6, 2) and result.images().shape == (6, 2, 1, 8, 8)
    np.testing.assert_allclose(result.ssim[0], levelset.ssim(sources, targets, (1, 8, 8)), rtol=1e-6)


def test_signals_are_not_measured_with_ssim():
    model = nn.Sequential(nn.Flatten(), nn.Linear(40, 3))
    result = levelset.traverse(model, torch.rand(2, 1, 40), torch.rand(2, 1, 40), steps=2, input_shape=(1, 40))
    assert result.ssim is None and result.input_shape == (1, 40)


def test_the_model_keeps_its_mode_and_weights_and_gets_no_gradients():
    model = mlp().train()
    before = [p.detach().clone() for p in model.parameters()]
    levelset.traverse(model, box_points(3), box_points(3, seed=2), steps=5)
    assert model.training
    assert all(torch.equal(p, q) and p.grad is None for p, q in zip(model.parameters(), before))


def test_a_path_survives_saving_as_arrays():
    result = levelset.traverse(mlp(), box_points(2), box_points(2, seed=2), steps=3)
    again = from_arrays(LevelSetPath, *to_arrays(result))
    np.testing.assert_array_equal(again.path, result.path)
    assert again.settings == result.settings


# ---------------------------------------------------------------- SSIM


def test_ssim_of_an_image_with_itself_is_one():
    image = np.random.default_rng(0).uniform(size=64)
    assert levelset.ssim(image, image, (1, 8, 8)) == pytest.approx(1.0)


def test_ssim_decreases_as_noise_grows():
    rng = np.random.default_rng(0)
    image = rng.uniform(size=(16, 16))
    noise = rng.normal(size=(16, 16))
    noisy = np.stack([image + s * noise for s in (0.05, 0.1, 0.2, 0.4)])
    values = levelset.ssim(noisy, np.broadcast_to(image, noisy.shape), (16, 16))
    assert np.all(np.diff(values) < 0) and values[0] < 1


def test_ssim_of_two_constant_images_is_the_luminance_term():
    """No variance: SSIM = (2ab + C1) / (a^2 + b^2 + C1) with C1 = (0.01 L)^2."""
    a, b, c1 = 0.3, 0.7, 0.01 ** 2
    value = levelset.ssim(np.full(64, a), np.full(64, b), (8, 8))
    assert value == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1))


# ---------------------------------------------------------------- star statistics


def test_triangle_statistics_of_a_constant_model_are_trivial():
    model, (s, a, b) = constant_model(), torch.rand(3, 4)
    tri = levelset.triangle_confidence(model, s, a, b, resolution=6)
    p = 1 / (1 + np.exp(-1.0))
    assert len(tri.confidence) == 7 * 8 // 2
    np.testing.assert_allclose(tri.confidence, p, rtol=1e-6)
    assert tri.mean == pytest.approx(p) and np.all(tri.fraction_above == 1)
    np.testing.assert_allclose(tri.edge_min, p, rtol=1e-6)


def test_triangle_plane_coordinates_keep_the_distances_between_grid_points():
    model, (s, a, b) = constant_model(), torch.rand(3, 4, dtype=torch.float64)
    tri = levelset.triangle_confidence(model, s, a, b, resolution=4)
    points = (s + torch.as_tensor(tri.weights) @ torch.stack([a - s, b - s])).numpy()
    in_space = np.linalg.norm(points[:, None] - points[None], axis=-1)
    in_plane = np.linalg.norm(tri.plane[:, None] - tri.plane[None], axis=-1)
    np.testing.assert_allclose(in_plane, in_space, atol=1e-6)


def test_triangle_edge_minimum_finds_the_least_confident_edge_point():
    model = linear_model(d=2)
    s, a, b = (torch.tensor(v, dtype=torch.float64) for v in ([0.0, 0.0], [1.0, 0.0], [0.0, 1.0]))
    tri = levelset.triangle_confidence(model, s, a, b, resolution=5, source_class=0)
    with torch.no_grad():
        ends = F.softmax(model(torch.stack([s, a, b])), dim=1)[:, 0].numpy()
    # the confidence is monotone along a line, so each edge's minimum is at one of its ends
    expected = [min(ends[0], ends[1]), min(ends[0], ends[2]), min(ends[1], ends[2])]
    np.testing.assert_allclose(tri.edge_min, expected, rtol=1e-12)


def test_width_probe_orthogonal_to_a_linear_models_normal_keeps_the_confidence():
    model = linear_model()
    point = torch.randn(5, dtype=torch.float64)
    tangent = torch.as_tensor(normal(model))  # probing across the normal stays in the hyperplane
    probe = levelset.width_probe(model, point, tangent, directions=6, radii=[0.0, 1.0, 5.0])
    assert probe.confidence.shape == (6, 3)
    np.testing.assert_allclose(probe.confidence, probe.p_point, atol=1e-12)


def test_width_probe_directions_are_orthogonal_to_the_tangent():
    tangent = torch.randn(10, dtype=torch.float64)
    u = levelset.orthogonal_directions(tangent, 10, 8, seed=0)
    np.testing.assert_allclose((u @ tangent).numpy(), 0.0, atol=1e-12)
    np.testing.assert_allclose(u.norm(dim=1).numpy(), 1.0)


# ---------------------------------------------------------------- 2-D maps


def test_confidence_map_is_the_class_probability_on_the_grid():
    model = linear_model(d=2)
    grid_x, grid_y = np.linspace(-1, 1, 4), np.linspace(0, 2, 3)
    cmap = levelset.confidence_map(model, 1, grid_x, grid_y)
    w, c = model.weight.detach().numpy(), model.bias.detach().numpy()
    xx, yy = np.meshgrid(grid_x, grid_y)
    logit_gap = (w[1, 0] - w[0, 0]) * xx + (w[1, 1] - w[0, 1]) * yy + c[1] - c[0]
    np.testing.assert_allclose(cmap.confidence, 1 / (1 + np.exp(-logit_gap)), rtol=1e-12)


# ---------------------------------------------------------------- adversarial examples


def worst_case(model, x, y, eps):
    """The exact L_inf worst case for a 2-class linear model: x - eps sign(w_y - w_other)."""
    w = model.weight.detach()
    return x - eps * torch.sign(w[y] - w[1 - y])


def test_pgd_finds_the_linear_models_worst_case_in_the_box():
    model, x, eps = linear_model(), torch.rand(3, 5, dtype=torch.float64), 0.1
    y = torch.tensor([0, 1, 0])
    x_adv = levelset.pgd_attack(model, x, y, eps, alpha=0.04, steps=5, bounds=None)
    expected = torch.stack([worst_case(model, x[i], int(y[i]), eps) for i in range(3)])
    torch.testing.assert_close(x_adv, expected)


def test_pgd_stays_inside_the_input_bounds():
    model, x = linear_model(), torch.rand(4, 5, dtype=torch.float64)
    x_adv = levelset.pgd_attack(model, x, torch.zeros(4, dtype=torch.long), 0.5, 0.2, 5, (0.0, 1.0),
                                random_start=True, seed=0)
    assert x_adv.min() >= 0 and x_adv.max() <= 1 and (x_adv - x).abs().max() <= 0.5 + 1e-12


def test_adversarial_loss_is_the_loss_at_the_worst_case_and_trains_the_weights():
    model, x, y, eps = linear_model(), torch.rand(4, 5, dtype=torch.float64), torch.tensor([0, 1, 1, 0]), 0.05
    loss = levelset.adversarial_loss(model, x, y, eps=eps, alpha=0.02, steps=5, bounds=None, random_start=False)
    expected = F.cross_entropy(model(torch.stack([worst_case(model, x[i], int(y[i]), eps) for i in range(4)])), y)
    clean = F.cross_entropy(model(x), y)
    assert loss.item() == pytest.approx(expected.item()) and loss.item() > clean.item()
    loss.backward()
    assert model.weight.grad is not None and model.weight.grad.abs().sum() > 0
