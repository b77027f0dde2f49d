import math

import pytest
import torch

from engine.models import (
    ACTIVATIONS,
    PARAMETRIZATIONS,
    Centered,
    Dense,
    ModelSpec,
    build,
    count_parameters,
    lr_multipliers,
)

WIDTH = 512


def dense_layers(model):
    return {name: m for name, m in model.named_modules() if isinstance(m, Dense)}


def expected_variance(parametrization, role, fan_in, sigma=1.0):
    if parametrization == "ntk":
        return sigma**2
    if role == "output" and parametrization == "mup":
        return sigma**2 / fan_in**2
    if role == "output" and parametrization == "meanfield":
        return sigma**2
    return sigma**2 / fan_in


@pytest.mark.parametrize("parametrization", PARAMETRIZATIONS)
def test_init_variance_follows_the_parametrization(parametrization):
    spec = ModelSpec(width=WIDTH, depth=2, parametrization=parametrization, init_scale=1.5)
    model = build(spec, (WIDTH,), WIDTH)
    for layer in dense_layers(model).values():
        want = expected_variance(parametrization, layer.role, layer.in_features, 1.5)
        # the sample variance of n Gaussian draws has relative standard error sqrt(2/n)
        n = layer.weight.numel()
        assert abs(layer.weight.var().item() / want - 1) < 6 * math.sqrt(2 / n)
        assert layer.weight.mean().abs().item() < 6 * math.sqrt(want / n)


def test_biases_start_at_zero():
    model = build(ModelSpec(), (2,), 3)
    assert all(torch.all(m.bias == 0) for m in dense_layers(model).values())


@pytest.mark.parametrize("parametrization", ["standard", "ntk", "mup"])
def test_preactivations_are_order_one_at_any_width(parametrization):
    # Standard, NTK and muP keep hidden preactivations O(1) as the width grows.
    x = torch.randn(256, 64)
    for width in (128, 1024):
        model = build(ModelSpec(width=width, depth=2, parametrization=parametrization), (64,), 1)
        h = model.layers.fc2(model.layers.act1(model.layers.fc1(x)))
        assert 0.2 < h.std().item() < 2.0


def test_meanfield_output_shrinks_like_one_over_sqrt_width():
    x = torch.randn(512, 8)
    stds = [build(ModelSpec(width=w, parametrization="meanfield", seed=1), (8,), 1)(x).std().item()
            for w in (64, 4096)]
    assert stds[1] / stds[0] == pytest.approx(math.sqrt(64 / 4096), rel=0.35)


def test_low_rank_init_has_the_requested_rank_and_variance():
    model = build(ModelSpec(width=256, depth=2, rank=3), (256,), 2)
    hidden = model.layers.fc2.weight
    assert torch.linalg.matrix_rank(hidden).item() == 3
    assert hidden.var().item() == pytest.approx(1 / 256, rel=0.25)
    assert torch.linalg.matrix_rank(model.layers.out.weight).item() == 2  # readout stays full


def test_same_seed_same_weights_and_other_seed_differs():
    a, b, c = (build(ModelSpec(seed=s), (2,), 2) for s in (0, 0, 1))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.layers.fc1.weight, c.layers.fc1.weight)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("kind", ["mlp", "resmlp"])
def test_mlps_map_inputs_to_outputs(kind, activation):
    model = build(ModelSpec(kind=kind, activation=activation, width=16, depth=3), (5,), 4)
    assert model(torch.randn(7, 5)).shape == (7, 4)


def test_depth_zero_is_a_linear_model():
    model = build(ModelSpec(depth=0), (3,), 2)
    assert count_parameters(model) == 3 * 2 + 2


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 40)])
def test_cnn_takes_flattened_images_and_signals(shape):
    model = build(ModelSpec(kind="cnn", width=8, depth=2), shape, 10)
    assert model(torch.rand(5, math.prod(shape))).shape == (5, 10)


def test_cnn_refuses_flat_inputs_with_a_sentence():
    with pytest.raises(ValueError, match="image-like"):
        build(ModelSpec(kind="cnn"), (2,), 2)


def test_residual_blocks_add_their_input():
    model = build(ModelSpec(kind="resmlp", width=8, depth=1), (2,), 1)
    with torch.no_grad():
        model.blocks[0].fc.weight.zero_()
    h = torch.randn(4, 8)
    assert torch.allclose(model.blocks[0](h), h)


@pytest.mark.parametrize("bad, field", [
    (dict(width=0), "width"), (dict(depth=-1), "depth"), (dict(init_scale=-1.0), "init_scale"),
    (dict(activation="swish"), "activation"), (dict(parametrization="xyz"), "parametrization"),
    (dict(alpha=0.0), "alpha"), (dict(rank=0), "rank"), (dict(kind="cnn", parametrization="ntk"), "parametrization"),
])
def test_invalid_specs_name_the_field_with_a_sentence(bad, field):
    errors = ModelSpec(**bad).errors()
    assert field in errors and errors[field].endswith(".")
    with pytest.raises(ValueError):
        build(ModelSpec(**bad), (2,), 2)


def test_too_large_a_model_is_refused_before_allocation():
    with pytest.raises(ValueError, match="parameters"):
        build(ModelSpec(width=8192, depth=64), (2,), 2)


def test_centered_is_zero_at_wrap_time_and_moves_after():
    model = build(ModelSpec(alpha=7.0), (3,), 2)
    x = torch.randn(10, 3)
    assert torch.equal(model(x), torch.zeros(10, 2))
    with torch.no_grad():
        model.model.layers.out.weight.add_(0.1)
    assert model(x).abs().max() > 0


def test_centered_output_is_alpha_times_the_difference():
    inner = build(ModelSpec(), (3,), 2)
    w0 = {k: v.clone() for k, v in inner.state_dict().items()}
    centered = Centered(inner, alpha=3.0)
    with torch.no_grad():
        inner.layers.fc1.weight.mul_(1.1)
    x = torch.randn(6, 3)
    reference = build(ModelSpec(), (3,), 2)
    reference.load_state_dict(w0)
    assert torch.allclose(centered(x), 3.0 * (inner(x) - reference(x)), atol=1e-6)


def test_centered_exposes_only_trainable_weights_as_parameters():
    model = build(ModelSpec(alpha=2.0), (3,), 2)
    assert all(name.startswith("model.") for name, _ in model.named_parameters())
    assert any(name.startswith("w0.") for name in model.state_dict())


def test_mup_sgd_learning_rates_follow_the_width():
    model = build(ModelSpec(width=256, parametrization="mup", base_width=64), (3,), 2)
    m = lr_multipliers(model, "sgd", base_width=64)
    assert (m["layers.fc1.weight"], m["layers.fc2.weight"], m["layers.out.weight"]) == (4.0, 1.0, 0.25)
    m = lr_multipliers(model, "adam", base_width=64)
    assert (m["layers.fc1.weight"], m["layers.fc2.weight"], m["layers.out.weight"]) == (1.0, 0.25, 0.25)


def test_standard_learning_rates_are_untouched():
    model = build(ModelSpec(width=256), (3,), 2)
    assert set(lr_multipliers(model, "sgd").values()) == {1.0}


def test_pruned_weights_keep_their_mup_learning_rates():
    from engine import pruning
    model = build(ModelSpec(width=256, parametrization="mup", base_width=64), (3,), 2)
    before = lr_multipliers(model, "sgd")
    pruning.apply(model, pruning.masks(pruning.scores(model, "magnitude"), 0.5))
    after = lr_multipliers(model, "sgd")
    assert after["layers.out.parametrizations.weight.original"] == before["layers.out.weight"] == 0.25


def test_the_quadratic_activation_squares():
    net = build(ModelSpec(width=4, depth=1, activation="quadratic", bias=False), (2,), 1)
    x = torch.randn(5, 2)
    hidden = x @ net.layers.fc1.weight.T * net.layers.fc1.multiplier
    assert torch.allclose(net(x), (hidden**2) @ net.layers.out.weight.T * net.layers.out.multiplier, atol=1e-6)


# ---------------------------------------------------------------- the zoo: ResNet-20 and VGG

def resnet_parameter_count(channels_in, width, depth, n_out, kernel):
    """He et al.'s CIFAR ResNet counted by hand: bias-free kxk convs, 2 BatchNorm parameters per
    channel, a parameter-free shortcut, a linear readout with bias."""
    def conv_bn(c_in, c_out):
        return kernel * c_in * c_out + 2 * c_out

    total, c = conv_bn(channels_in, width), width
    for stage_width in (width, 2 * width, 4 * width):
        for _ in range(depth):
            total += conv_bn(c, stage_width) + conv_bn(stage_width, stage_width)
            c = stage_width
    return total + c * n_out + n_out


@pytest.mark.parametrize("kind", ["resnet", "resnet-noskip"])
@pytest.mark.parametrize("shape, kernel", [((3, 32, 32), 9), ((1, 8, 8), 9), ((1, 40), 3)])
def test_resnet20_parameter_count_is_the_closed_form(kind, shape, kernel):
    model = build(ModelSpec(kind=kind, width=16, depth=3), shape, 10)
    assert count_parameters(model) == resnet_parameter_count(shape[0], 16, 3, 10, kernel)


def test_resnet20_on_cifar_shapes_has_027m_parameters():
    assert resnet_parameter_count(3, 16, 3, 10, 9) == 269_722  # He et al. 2016, Table 6: 0.27M


def test_resnet56_on_cifar_shapes_has_085m_parameters():
    assert resnet_parameter_count(3, 16, 9, 10, 9) == 853_018  # He et al. 2016, Table 6: 0.85M


@pytest.mark.parametrize("kind", ["resnet", "resnet-noskip"])
def test_a_narrow_resnet56_parameter_count_is_the_closed_form(kind):
    """ResNet-56 (9 blocks per stage) at width 8, as the deep skip-connection preset builds it."""
    model = build(ModelSpec(kind=kind, width=8, depth=9), (1, 8, 8), 10)
    assert count_parameters(model) == resnet_parameter_count(1, 8, 9, 10, 9)


def test_vgg_parameter_count_is_the_closed_form():
    """Two conv-bn layers per stage (3x3, no bias) of 8, 16, 32 channels, then 32 -> 10."""
    convs = (9 * 1 * 8 + 9 * 8 * 8) + (9 * 8 * 16 + 9 * 16 * 16) + (9 * 16 * 32 + 9 * 32 * 32)
    batchnorms = 2 * 2 * (8 + 16 + 32)
    model = build(ModelSpec(kind="vgg", width=8, depth=2), (1, 8, 8), 10)
    assert count_parameters(model) == convs + batchnorms + 32 * 10 + 10


@pytest.mark.parametrize("kind", ["resnet", "resnet-noskip", "vgg"])
@pytest.mark.parametrize("shape, conv, norm", [((1, 8, 8), torch.nn.Conv2d, torch.nn.BatchNorm2d),
                                               ((1, 40), torch.nn.Conv1d, torch.nn.BatchNorm1d)])
def test_zoo_convolves_digits_in_2d_and_mnist1d_signals_in_1d(kind, shape, conv, norm):
    model = build(ModelSpec(kind=kind, width=4, depth=1), shape, 10)
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d,
                                                            torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))]
    assert layers and all(isinstance(m, (conv, norm)) for m in layers)
    assert model(torch.randn(3, *shape)).shape == (3, 10)


def test_resnet_and_resnet_noskip_of_one_seed_have_the_same_weights():
    skip, noskip = (build(ModelSpec(kind=k, width=4, depth=2, seed=3), (1, 8, 8), 10).state_dict()
                    for k in ("resnet", "resnet-noskip"))
    assert skip.keys() == noskip.keys()
    assert all(torch.equal(skip[k], noskip[k]) for k in skip)


def option_a_shortcut(x, channels):
    """He et al.'s parameter-free shortcut, by hand: subsample by the size ratio, zero-pad channels."""
    extra = channels - x.shape[1]
    if extra:
        x = x[:, :, ::2, ::2]
        zeros = torch.zeros(x.shape[0], extra // 2, *x.shape[2:])
        x = torch.cat([zeros, x, zeros], dim=1)
    return x


def test_resnet_noskip_differs_from_resnet_only_in_the_shortcuts():
    """Same weights: every block of the ResNet is relu(h + shortcut(x)) where the no-skip
    block is relu(h), h being the no-skip block's residual branch."""
    spec = ModelSpec(kind="resnet", width=4, depth=2, seed=1)
    skip = build(spec, (1, 8, 8), 10).eval()
    noskip = build(ModelSpec.from_dict(spec.to_dict() | {"kind": "resnet-noskip"}), (1, 8, 8), 10).eval()
    x = torch.randn(5, 1, 8, 8)
    h = skip.act(skip.bn(skip.stem(x)))
    for block_skip, block_noskip in zip(skip.blocks, noskip.blocks):
        branch = {}
        handle = block_noskip.bn2.register_forward_hook(lambda m, i, out: branch.update(h=out))
        plain = block_noskip(h)
        handle.remove()
        torch.testing.assert_close(plain, torch.relu(branch["h"]))
        out = block_skip(h)
        torch.testing.assert_close(out, torch.relu(branch["h"] + option_a_shortcut(h, out.shape[1])))
        h = out


def test_zoo_models_refuse_other_parametrizations_with_a_sentence():
    with pytest.raises(ValueError, match="The ResNet supports only the standard parametrization"):
        build(ModelSpec(kind="resnet-noskip", parametrization="mup"), (1, 8, 8), 10)
