"""Devices without float64 (Apple's MPS): the lenses that compute in float64 ask
`engine.device.supports_float64` where their tensors live and do that part on the CPU when
the answer is no. MPS cannot run here, so the question is answered by a stand-in that says
no and records what it was asked; the results must be those computed with float64 where the
tensors are."""
import numpy as np
import pytest
import torch
from torch import nn

from engine import device, geometry, landscape, lazy, levelset, pruning

pytestmark = pytest.mark.usefixtures("one_thread")


def with_and_without_float64(compute, monkeypatch):
    """(compute() as usual, compute() where no device has float64, the devices then asked)."""
    usual = compute()
    asked = []
    monkeypatch.setattr(device, "supports_float64", lambda where: asked.append(torch.device(where).type) or False)
    return usual, compute(), asked


def classifier(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()


def data(n=40, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_the_cpu_computes_in_float64():
    assert device.supports_float64("cpu") and device.float64_device("cpu") == torch.device("cpu")


def test_float64_work_for_a_device_without_it_goes_to_the_cpu(monkeypatch):
    monkeypatch.setattr(device, "supports_float64", lambda where: torch.device(where).type != "mps")
    assert device.float64_device("mps") == torch.device("cpu")
    assert device.float64_device("cuda:1") == torch.device("cuda:1")  # a device with float64 keeps it
    moved = device.to_float64(torch.ones(3))
    assert moved.dtype == torch.float64 and moved.device.type == "cpu"


def test_a_surface_sums_its_losses_where_float64_is(monkeypatch):
    model, (x, y) = classifier(), data()
    d1, d2 = landscape.random_direction(model, seed=0), landscape.random_direction(model, seed=1)

    def compute():
        return landscape.surface(model, "ce", x, y, d1, d2, xs=np.linspace(-1, 1, 3), ys=np.linspace(-1, 1, 3))

    usual, fallback, asked = with_and_without_float64(compute, monkeypatch)
    assert "cpu" in asked
    np.testing.assert_array_equal(fallback.loss, usual.loss)
    np.testing.assert_array_equal(fallback.accuracy, usual.accuracy)


def test_directions_are_normalised_and_planes_drawn_where_float64_is(monkeypatch):
    models = [classifier(seed) for seed in range(3)]

    def compute():
        direction = landscape.random_direction(models[0], norm=None, seed=0)  # the whole-model norm
        plane = landscape.plane_through(*models)
        return [direction[k] for k in direction] + [plane.d2[k] for k in plane.d2]

    usual, fallback, asked = with_and_without_float64(compute, monkeypatch)
    assert "cpu" in asked
    for a, b in zip(usual, fallback):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_ssim_and_the_triangles_plane_are_computed_where_float64_is(monkeypatch):
    model = classifier()
    source, a, b = torch.randn(3, 4, generator=torch.Generator().manual_seed(2))
    images = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(3))

    def compute():
        triangle = levelset.triangle_confidence(model, source, a, b, resolution=4)
        return triangle.vertices, triangle.confidence, levelset.ssim(images[0], images[1], (1, 8, 8))

    usual, fallback, asked = with_and_without_float64(compute, monkeypatch)
    assert "cpu" in asked
    for first, second in zip(usual, fallback):
        np.testing.assert_array_equal(first, second)


def test_pruning_thresholds_synflow_and_last_layer_angles_are_computed_where_float64_is(monkeypatch):
    model, (x, y) = classifier(), data()

    def compute():
        magnitude = pruning.scores(model, "magnitude")
        geometry_ = pruning.last_layer_geometry(model, x, y)
        return (pruning.masks(magnitude, 0.5, "global"), pruning.scores(model, "synflow", x),
                pruning.scores(model, "random"), pruning.synflow_iterative(model, 0.5, rounds=3, x=x),
                geometry_.angle, geometry_.margin)

    usual, fallback, asked = with_and_without_float64(compute, monkeypatch)
    assert "cpu" in asked
    for first, second in zip(usual, fallback):
        if isinstance(first, dict):
            assert first.keys() == second.keys()
            for name in first:
                torch.testing.assert_close(first[name], second[name], rtol=0, atol=0)
        else:
            np.testing.assert_array_equal(first, second)


def test_kernel_and_weight_changes_are_computed_where_float64_is(monkeypatch):
    g = torch.Generator().manual_seed(4)
    features = torch.randn(12, 5, generator=g)
    K0, K = features @ features.T, (features + 0.1 * torch.randn(12, 5, generator=g)) @ features.T
    labels = torch.arange(12) % 3

    def compute():
        return (lazy.kernel_distance(K0, K), lazy.relative_kernel_change(K0, K), lazy.kernel_alignment(K, labels),
                lazy.relative_weight_change(classifier(0), classifier(1)).total,
                geometry.linear_cka(features, features[:, :3]))

    usual, fallback, asked = with_and_without_float64(compute, monkeypatch)
    assert "cpu" in asked and fallback == usual


def test_an_ntk_asked_for_in_float64_on_a_device_without_it_is_a_sentence(monkeypatch):
    from engine.ntk import empirical_ntk

    monkeypatch.setattr(device, "supports_float64", lambda where: False)
    with pytest.raises(ValueError, match=r"The model's device \(cpu\) has no float64: compute the NTK in float32"):
        empirical_ntk(classifier(), data(6)[0], kind="trace", dtype=torch.float64)
    assert empirical_ntk(classifier(), data(6)[0], kind="trace").dtype == torch.float32  # float32 still runs
