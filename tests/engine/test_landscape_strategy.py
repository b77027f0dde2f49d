"""Surface evaluation strategies (issue 16): batched over grid points, one point at a time
with the weights written in place, and a chain's first layer computed once per grid. Every
strategy is checked against the plain reference: a copy of the model whose weights are moved
in place, evaluated point by point."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine import landscape
from engine.models import ModelSpec, build

pytestmark = pytest.mark.usefixtures("one_thread")

XS, YS = np.linspace(-1.0, 1.0, 4), np.array([-0.5, 0.25, 1.0])  # a non-square 3 x 4 grid
STRATEGIES = ["batched", "per point", "auto"]


@pytest.fixture(scope="module")
def data():
    torch.manual_seed(0)
    x = torch.randn(50, 5)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return x, y


def moved(model: nn.Module, scale: float = 0.2) -> nn.Module:
    """The model with every parameter nudged, so that biases and outputs are not trivial."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return model


def reference_surface(model, loss, x, y, d1, d2, xs, ys):
    """(loss, accuracy) at w + a d1 + b d2 on a copy whose weights are moved in place."""
    copied = copy.deepcopy(model).eval()
    params = dict(copied.named_parameters())
    w = {k: p.detach().clone() for k, p in params.items()}
    grid = []
    with torch.no_grad():
        for b in ys:
            row = []
            for a in xs:
                for k, p in params.items():
                    p.copy_(w[k] + a * d1[k] + b * d2[k])
                out = copied(x)
                correct = (out.argmax(1) == y).float().mean().item() if y.dim() == 1 else 0.0
                row.append((loss(out, y).item(), correct))
            grid.append(row)
    return np.array(grid)


def assert_matches_reference(model, x, y, strategy, loss="ce", reference_loss=F.cross_entropy,
                             **options):
    d1 = landscape.random_direction(model, seed=1, ignore=None)  # biases move too
    d2 = landscape.random_direction(model, seed=2)  # biases stay
    result = landscape.surface(model, loss, x, y, d1, d2, xs=XS, ys=YS, strategy=strategy,
                               **options)
    expected = reference_surface(model, reference_loss, x, y, d1, d2, XS, YS)
    np.testing.assert_allclose(result.loss, expected[..., 0], rtol=1e-5, atol=1e-5)
    if result.accuracy is not None:
        np.testing.assert_allclose(result.accuracy, expected[..., 1], atol=1e-6)
    return result


CHAINS = {
    "mlp relu": lambda: build(ModelSpec(width=8, depth=2, seed=1), (5,), 3),
    "mlp tanh, no bias": lambda: build(ModelSpec(width=8, depth=2, activation="tanh", bias=False,
                                                 seed=2), (5,), 3),
    "mlp quadratic": lambda: build(ModelSpec(width=8, depth=1, activation="quadratic", seed=3),
                                   (5,), 3),
    "mlp ntk (Dense multipliers)": lambda: build(ModelSpec(width=8, depth=2, parametrization="ntk",
                                                           seed=4), (5,), 3),
    "sequential sigmoid gelu": lambda: nn.Sequential(nn.Linear(5, 7), nn.Sigmoid(), nn.Linear(7, 6),
                                                     nn.GELU(), nn.Linear(6, 3)),
    "sequential silu leaky identity": lambda: nn.Sequential(
        nn.Linear(5, 7, bias=False), nn.SiLU(), nn.Linear(7, 6), nn.LeakyReLU(0.1), nn.Identity(),
        nn.Dropout(0.5), nn.Linear(6, 3, bias=False)),
    "activation before the first layer": lambda: nn.Sequential(nn.Tanh(), nn.Linear(5, 6),
                                                               nn.ReLU(inplace=True), nn.Linear(6, 3)),
    "one layer": lambda: nn.Sequential(nn.Linear(5, 3)),
    "one layer and an activation": lambda: nn.Sequential(nn.Linear(5, 3), nn.Tanh()),
    "activation after the last layer": lambda: nn.Sequential(nn.Linear(5, 4), nn.ReLU(),
                                                             nn.Linear(4, 3), nn.Sigmoid()),
    "not a chain: a bare linear layer": lambda: nn.Linear(5, 3),
}


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("name", list(CHAINS))
def test_chain_surface_equals_the_in_place_reference(data, name, strategy):
    torch.manual_seed(0)
    model = moved(CHAINS[name]())
    x, y = data
    x_before = x.clone()
    assert_matches_reference(model, x, y, strategy)
    assert torch.equal(x, x_before)  # an in-place activation never reaches the caller's data


@pytest.mark.parametrize("strategy", ["batched", "per point"])
def test_chains_take_the_first_layer_once_route(data, strategy):
    model = moved(CHAINS["mlp relu"]())
    result = assert_matches_reference(model, *data, strategy)
    route = result.settings["points_at_once"]
    assert route.startswith("chain, first layer once per grid")
    assert ("one point at a time" in route) == (strategy == "per point")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_batches_of_samples_and_small_chunks_give_the_reference(data, strategy, monkeypatch):
    monkeypatch.setattr(landscape, "CPU_MEMORY_BUDGET", 300)  # a few points per chunk
    monkeypatch.setattr(landscape, "CHAIN_CHUNK_BYTES", 300)  # a chain's, too
    monkeypatch.setattr(landscape, "CHAIN_CACHE_BYTES", 300)
    result = assert_matches_reference(moved(CHAINS["mlp relu"]()), *data, strategy, batch_size=7)
    assert result.settings["batch_size"] == 7 and result.settings["points_per_chunk"] < 12


def test_a_chunk_of_several_passes_gives_the_reference(data, monkeypatch):
    monkeypatch.setattr(landscape, "CHAIN_CHUNK_BYTES", 600)  # 7 points of 3 outputs x 7 samples
    monkeypatch.setattr(landscape, "CHAIN_CACHE_BYTES", 2000)  # 2 points (956 bytes each) at once
    result = assert_matches_reference(moved(CHAINS["mlp relu"]()), *data, "batched", batch_size=7)
    assert result.settings["points_per_pass"] == 2 and result.settings["points_per_chunk"] == 6


TWO_CLASS_CHAINS = {
    "mlp relu": lambda: build(ModelSpec(width=8, depth=2, seed=1), (5,), 2),
    "mlp tanh, no bias": lambda: build(ModelSpec(width=8, depth=2, activation="tanh", bias=False,
                                                 seed=2), (5,), 2),
    "mlp ntk (Dense multipliers)": lambda: build(ModelSpec(width=8, depth=3, parametrization="ntk",
                                                           seed=4), (5,), 2),
    "one layer": lambda: nn.Sequential(nn.Linear(5, 2)),
    "activation after the last layer": lambda: nn.Sequential(nn.Linear(5, 4), nn.ReLU(),
                                                             nn.Linear(4, 2), nn.Sigmoid()),
}


@pytest.mark.parametrize("name", list(TWO_CLASS_CHAINS))
def test_two_class_cross_entropy_equals_the_reference(data, name):
    x, y = data
    model = moved(TWO_CLASS_CHAINS[name]())
    result = assert_matches_reference(model, x, (y > 0).long(), "batched")
    takes_the_difference = name not in ("one layer", "activation after the last layer")
    assert ("two logits as their difference" in result.settings["points_at_once"]) == takes_the_difference


def test_two_class_ties_go_to_the_first_class_as_argmax(data):
    x, y = data
    y = (y > 0).long()
    model = moved(TWO_CLASS_CHAINS["mlp relu"]())
    with torch.no_grad():  # equal logits everywhere on the grid: the last layer's rows agree
        last = model.layers.out
        last.weight[1] = last.weight[0]
        last.bias[1] = last.bias[0]
    d = {k: torch.zeros_like(v) for k, v in model.named_parameters()}
    d["layers.fc1.weight"] = torch.randn_like(d["layers.fc1.weight"])
    result = landscape.surface(model, "ce", x, y, d, d, xs=XS, ys=YS, strategy="batched")
    np.testing.assert_allclose(result.accuracy, (y == 0).float().mean().item(), atol=1e-6)
    np.testing.assert_allclose(result.loss, np.log(2.0), rtol=1e-6)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_regression_surface_of_a_chain_equals_the_reference(strategy):
    torch.manual_seed(3)
    x, y = torch.randn(30, 5), torch.randn(30, 2)
    model = moved(nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 2)))
    result = assert_matches_reference(model, x, y, strategy, loss="mse", reference_loss=F.mse_loss)
    assert result.accuracy is None


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_line_of_a_chain_equals_the_reference(data, strategy):
    x, y = data
    model = moved(CHAINS["mlp relu"]())
    d = landscape.random_direction(model, seed=5)
    zero = {k: torch.zeros_like(v) for k, v in d.items()}
    line = landscape.surface(model, "ce", x, y, d, xs=XS, strategy=strategy)
    expected = reference_surface(model, F.cross_entropy, x, y, d, zero, XS, [0.0])[0, :, 0]
    np.testing.assert_allclose(line.loss, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_centered_model_equals_the_reference(data, strategy):
    x, y = data
    model = moved(build(ModelSpec(width=8, depth=2, alpha=3.0, seed=5), (5,), 3))
    assert_matches_reference(model, x, y, strategy)


def conv_net() -> nn.Module:
    return nn.Sequential(nn.Unflatten(1, (1, 5)), nn.Conv1d(1, 4, 3, padding=1), nn.ReLU(),
                         nn.Conv1d(4, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(12, 3))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_conv_net_falls_back_and_equals_the_reference(data, strategy):
    torch.manual_seed(4)
    result = assert_matches_reference(moved(conv_net()), *data, strategy)
    expected_route = "one by one" if strategy == "per point" else "vmap"
    assert result.settings["points_at_once"] == expected_route


@pytest.mark.parametrize("strategy", ["batched", "per point"])
def test_surface_leaves_the_model_and_its_data_untouched(data, strategy):
    x, y = data
    model = moved(CHAINS["mlp relu"]()).train()
    before = copy.deepcopy(model.state_dict())
    landscape.surface(model, "ce", x, y, landscape.random_direction(model), xs=XS, strategy=strategy)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("strategy", ["batched", "per point"])
def test_progress_rises_to_one(data, strategy):
    model = moved(CHAINS["mlp relu"]())
    seen = []
    landscape.surface(model, "ce", *data, landscape.random_direction(model), xs=XS, ys=YS,
                      strategy=strategy, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0)


def test_unknown_strategy_is_refused_with_a_sentence(data):
    model = CHAINS["mlp relu"]()
    with pytest.raises(ValueError, match="strategy must be one of"):
        landscape.surface(model, "ce", *data, landscape.random_direction(model), xs=XS,
                          strategy="fastest")


def test_rule_goes_per_point_above_the_measured_flops_on_the_cpu_only():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    limit = landscape.PER_POINT_FLOPS
    assert landscape.choose_strategy(limit / 2, cpu) == "batched"
    assert landscape.choose_strategy(limit * 2, cpu) == "per point"
    assert landscape.choose_strategy(limit * 2, gpu) == "batched"


def test_chain_flops_count_two_per_multiply_add():
    layers = landscape.linear_chain(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))).layers
    assert landscape.chain_flops(layers, 10) == 2 * (4 * 3 + 3 * 2) * 10


def test_plane_combines_parts_like_the_weights_it_stands_for():
    torch.manual_seed(5)
    origin = {"w": torch.randn(3, 4)}
    directions = [{"w": torch.randn(3, 4)}, {"w": torch.randn(3, 4)}]
    plane = landscape.PlanePoints(origin, directions, np.array([[0.5, -1.0], [2.0, 0.25]]))
    stacked = plane(0, 2)["w"]
    buffers = plane.buffers()
    torch.testing.assert_close(plane.write_point(1, buffers)["w"], stacked[1])
    expected = origin["w"] + 2.0 * directions[0]["w"] + 0.25 * directions[1]["w"]
    torch.testing.assert_close(stacked[1], expected)
