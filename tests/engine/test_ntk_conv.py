"""The NTK's structured path on conv nets, BatchNorm, residual blocks and module graphs
(Linear and Conv layers through hooks, every other parameter by jacrev) against kernels
built from explicit per-sample Jacobians (torch.autograd.functional.jacobian)."""
import pytest
import torch
from torch import nn
from torch.func import functional_call

from engine import ntk
from engine.models import Centered, ModelSpec, build
from engine.ntk import KINDS, empirical_ntk

N_OUT = 3


class Block(nn.Module):
    """A residual block: relu(x + bn(conv(x)))."""

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x):
        return torch.relu(x + self.bn(self.conv(x)))


class ResNetLike(nn.Module):
    """Stem conv (strided, with bias), BatchNorm, a residual block, pooling and a readout:
    no single nn.Sequential holds the layers."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 3, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.block = Block(3)
        self.head = nn.Linear(3, N_OUT)

    def forward(self, x):
        return self.head(self.block(torch.tanh(self.bn(self.stem(x)))).mean((2, 3)))


def with_batchnorm_statistics(model):
    """Nonzero running statistics and affine parameters, so that BatchNorm matters."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.normal_(generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
                module.weight.normal_(generator=generator)
                module.bias.normal_(generator=generator)
    return model


def resnet_like():
    torch.manual_seed(0)
    return with_batchnorm_statistics(ResNetLike().double())


def conv1d_net():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(2, 3, 3, padding=2, dilation=2), nn.BatchNorm1d(3), nn.GELU(),
                          nn.Conv1d(3, 2, 2, stride=2), nn.Flatten(), nn.Linear(2 * 4, N_OUT))
    return with_batchnorm_statistics(model.double())


def images(n, seed=0):
    return torch.randn(n, 1, 6, 6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def signals(n, seed=0):
    return torch.randn(n, 2, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def explicit_jacobians(model, x):
    """(N, O, P): each sample's Jacobian in eval mode, by torch.autograd.functional.jacobian."""
    model = model.eval()
    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def jacobian(sample):
        def f(*values):
            return functional_call(model, ({**buffers, **dict(zip(params, values))},), (sample[None],))[0]
        parts = torch.autograd.functional.jacobian(f, tuple(params.values()))
        return torch.cat([p.reshape(p.shape[0], -1) for p in parts], dim=1)

    return torch.stack([jacobian(sample) for sample in x])


def reference_kernel(J1, J2, kind, rates=None):
    """Every kind from J diag(rates) J^T."""
    if rates is not None:
        J1 = J1 * rates
    n, o, m = J1.shape[0], J1.shape[1], J2.shape[0]
    full = torch.einsum("naP,mbP->namb", J1, J2)
    if kind == "full":
        return full.reshape(n * o, m * o)
    if kind == "trace":
        return torch.einsum("nama->nm", full)
    if kind == "diagonal":
        return torch.einsum("nama->nma", full)
    return full.sum((1, 3)) / o  # pseudo: g(x) . g(x'), g the gradient of sum_a f_a / sqrt(O)


def relative_error(a, b):
    return float((a - b).norm() / b.norm())


def expected_and_structured(model, x1, x2, kind, **options):
    expected = reference_kernel(explicit_jacobians(model, x1), explicit_jacobians(model, x2), kind)
    return expected, empirical_ntk(model, x1, x2, kind=kind, method="structured", **options)


# ---------------------------------------------------------------- equal to the Jacobian reference


@pytest.mark.parametrize("kind", KINDS)
def test_resnet_like_with_batchnorm_equals_the_jacobian_reference(kind):
    expected, got = expected_and_structured(resnet_like(), images(5), images(3, seed=1), kind)
    assert relative_error(got, expected) < 1e-10


@pytest.mark.parametrize("kind", KINDS)
def test_conv1d_net_equals_the_jacobian_reference(kind):
    expected, got = expected_and_structured(conv1d_net(), signals(4), signals(3, seed=1), kind)
    assert relative_error(got, expected) < 1e-10


@pytest.mark.parametrize("route", ["gram", "derivatives"])
@pytest.mark.parametrize("kind", KINDS)
def test_each_route_for_every_layer_equals_the_jacobian_reference(kind, route, monkeypatch):
    monkeypatch.setattr(ntk, "_cheaper_route", lambda *args: route)
    expected, got = expected_and_structured(resnet_like(), images(4), images(3, seed=1), kind)
    assert relative_error(got, expected) < 1e-10


def test_the_labs_resnet_in_float32_equals_the_float64_reference():
    model = build(ModelSpec(kind="resnet", width=2, depth=1, seed=0), (1, 8, 8), N_OUT)
    with_batchnorm_statistics(model)
    x = torch.randn(6, 64, generator=torch.Generator().manual_seed(0))
    J = explicit_jacobians(model.double(), x.double())
    got = empirical_ntk(model.float(), x, kind="trace", method="structured")
    assert got.dtype == torch.float32
    assert relative_error(got.double(), reference_kernel(J, J, "trace")) < 1e-5


def test_rates_weigh_each_parameters_jacobian_columns():
    model, x1, x2 = resnet_like(), images(4), images(3, seed=1)
    rates = {name: 0.5 + i for i, (name, _) in enumerate(model.named_parameters())}
    c = torch.cat([torch.full((p.numel(),), rates[n], dtype=torch.float64) for n, p in model.named_parameters()])
    expected = reference_kernel(explicit_jacobians(model, x1), explicit_jacobians(model, x2), "full", rates=c)
    got = empirical_ntk(model, x1, x2, kind="full", method="structured", rates=rates)
    assert relative_error(got, expected) < 1e-10


def test_layerwise_parts_are_the_modules_and_sum_to_the_total():
    model, x = resnet_like(), images(4)
    total, layers = empirical_ntk(model, x, kind="trace", layerwise=True, method="structured")
    assert sorted(layers) == ["block.bn", "block.conv", "bn", "head", "stem"]
    assert relative_error(total, empirical_ntk(model, x, kind="trace", method="contraction")) < 1e-10


def test_symmetric_kernel_in_chunks_equals_the_reference():
    model, x = resnet_like(), images(7)
    J = explicit_jacobians(model, x)
    got = empirical_ntk(model, x, kind="full", method="structured", chunk=3)
    assert relative_error(got, reference_kernel(J, J, "full")) < 1e-10


def test_a_linear_on_positions_shares_its_weight_across_them():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 4, N_OUT)).double()
    x = torch.randn(4, 3, 2, dtype=torch.float64)
    expected, got = expected_and_structured(model, x, x, "full")
    assert relative_error(got, expected) < 1e-10


class TiedTwice(nn.Module):
    """One Linear layer called twice: its weight's derivative has two terms per sample."""

    def __init__(self):
        super().__init__()
        self.shared = nn.Linear(4, 4)
        self.head = nn.Linear(4, N_OUT)

    def forward(self, x):
        return self.head(torch.tanh(self.shared(torch.tanh(self.shared(x)))))


def test_a_layer_called_twice_goes_through_jacrev_and_still_equals_the_reference():
    torch.manual_seed(0)
    model, x = TiedTwice().double(), torch.randn(4, 4, dtype=torch.float64)
    expected, got = expected_and_structured(model, x, x, "trace")
    assert relative_error(got, expected) < 1e-10


class TiedAcross(nn.Module):
    """Two Linear modules sharing one weight (named once by named_parameters)."""

    def __init__(self):
        super().__init__()
        self.first = nn.Linear(4, 4)
        self.second = nn.Linear(4, 4)
        self.second.weight = self.first.weight
        self.head = nn.Linear(4, N_OUT)

    def forward(self, x):
        return self.head(torch.tanh(self.second(torch.tanh(self.first(x)))))


def test_a_weight_shared_by_two_modules_counts_both_and_equals_the_reference():
    torch.manual_seed(0)
    model, x = TiedAcross().double(), torch.randn(4, 4, dtype=torch.float64)
    expected, got = expected_and_structured(model, x, x, "full")
    assert relative_error(got, expected) < 1e-10


def test_centered_conv_net_is_alpha_squared_its_inner_kernel():
    """Centered's frozen copy runs without autograd, so the hooks see only the trainable call."""
    inner = resnet_like()
    model, x = Centered(inner, alpha=3.0), images(4)
    got = empirical_ntk(model, x, kind="full", method="structured")
    J = explicit_jacobians(inner, x)
    assert relative_error(got, 9.0 * reference_kernel(J, J, "full")) < 1e-10


def test_the_structured_path_keeps_the_model_as_it_was():
    model = resnet_like().train()
    before = {name: t.clone() for name, t in model.state_dict().items()}
    empirical_ntk(model, images(3), kind="trace", method="structured")
    assert model.training and not model.stem._forward_hooks
    assert all(torch.equal(before[name], t) for name, t in model.state_dict().items())


def test_structured_refuses_a_model_without_linear_or_conv_layers():
    model = nn.Sequential(nn.BatchNorm1d(3), nn.Tanh()).double()
    with pytest.raises(ValueError, match="Linear or Conv1d/Conv2d .* method='contraction'"):
        empirical_ntk(model, torch.randn(4, 3, dtype=torch.float64), method="structured")


# ---------------------------------------------------------------- which route, and memory


def test_the_gram_form_is_chosen_where_positions_are_few_and_derivatives_where_they_are_many():
    few_positions = ntk._LayerShape(positions=4, patch=576, channels=64, output_shape=(1, 64, 2, 2))
    many_positions = ntk._LayerShape(positions=64, patch=9, channels=16, output_shape=(1, 16, 8, 8))
    assert ntk._cheaper_route(few_positions, 200, 10, "trace") == "gram"
    assert ntk._cheaper_route(many_positions, 200, 10, "trace") == "derivatives"


def test_a_small_memory_limit_chunks_to_the_same_kernel():
    model, x = resnet_like(), images(12)
    whole = empirical_ntk(model, x, kind="trace", method="structured")
    chunked = empirical_ntk(model, x, kind="trace", method="structured", memory_limit=1.5e5)
    assert relative_error(chunked, whole) < 1e-12


def test_a_limit_below_one_samples_derivatives_is_refused_with_a_sentence():
    with pytest.raises(ValueError, match=r"Even one sample's derivatives need about .* GB"):
        empirical_ntk(resnet_like(), images(12), kind="trace", method="structured", memory_limit=3e3)


def test_a_small_limit_makes_the_plan_chunk_the_structured_paths_samples():
    model, x = resnet_like(), images(12)
    with ntk.evaluating(model):
        params, constants = ntk._split_state(model, None)
        source = ntk._feature_source(model, params, constants, x, "structured", "trace",
                                     ntk._checked_rates(None, params))
        chunk, _ = ntk._plan(source, x, None, "trace", N_OUT, False, None, 1.5e5)
    assert isinstance(source, ntk._HookedLayers) and 1 <= chunk < len(x)


def test_a_million_parameter_conv_net_is_refused_before_it_starts_when_it_would_not_fit():
    model = build(ModelSpec(kind="resnet", width=32, depth=3, seed=0), (1, 8, 8), 10)
    assert sum(p.numel() for p in model.parameters()) > 1_000_000
    with pytest.raises(ValueError, match=r"Even one sample's derivatives need about .* GB .* than the 0.01 GB"):
        empirical_ntk(model, torch.zeros(300, 64), kind="trace", memory_limit=1e7)
