"""The lab's small zoo for Li et al. 2018's pictures: ResNets with and without skip connections
and a VGG-style CNN, checked against known results (ResNet-20's parameter count, He et al. 2016)
and hand-built references (the parameter-free shortcut), and their surfaces against a copy of
the model moved in place."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine import landscape
from engine.models import ModelSpec, build, count_parameters

pytestmark = pytest.mark.usefixtures("one_thread")


def test_resnet20_has_he_et_als_parameter_count():
    """3x3 convs without biases, BatchNorm (2 per channel), a 64 -> 10 readout: 0.27M."""
    def convs(c_in, c_out, n):
        return 9 * c_in * c_out + (n - 1) * 9 * c_out * c_out + n * 2 * c_out

    expected = (9 * 3 * 16 + 2 * 16) + convs(16, 16, 6) + convs(16, 32, 6) + convs(32, 64, 6) + (64 * 10 + 10)
    model = build(ModelSpec(kind="resnet", width=16, depth=3), (3, 32, 32), 10)
    assert count_parameters(model) == expected == 269_722


def test_the_no_skip_resnet_has_the_same_weights_as_the_resnet():
    shapes = [{k: v.shape for k, v in build(ModelSpec(kind=kind, width=4, depth=2), (1, 8, 8), 3).state_dict().items()}
              for kind in ("resnet", "resnet-noskip")]
    assert shapes[0] == shapes[1]


def zero_convs(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                m.weight.zero_()
    return model.eval()


def test_the_shortcut_subsamples_and_pads_channels_with_zeros():
    """With every conv at zero (and BatchNorm at its initial statistics) a downsampling block
    is act(shortcut(x)): x[:, :, ::2, ::2] with zero channels added on both sides."""
    model = zero_convs(build(ModelSpec(kind="resnet", width=4, depth=1), (1, 8, 8), 3))
    block = model.blocks[1]  # 4 -> 8 channels, stride 2
    x = torch.randn(2, 4, 8, 8)
    expected = torch.zeros(2, 8, 4, 4)
    expected[:, 2:6] = x[:, :, ::2, ::2]
    torch.testing.assert_close(block(x), F.relu(expected))


def test_without_skips_the_same_block_gives_zero():
    model = zero_convs(build(ModelSpec(kind="resnet-noskip", width=4, depth=1), (1, 8, 8), 3))
    assert torch.count_nonzero(model.blocks[1](torch.randn(2, 4, 8, 8))) == 0


@pytest.mark.parametrize("kind", ["resnet", "resnet-noskip", "vgg"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 40)])
def test_zoo_models_take_flat_images_and_signals(kind, shape):
    model = build(ModelSpec(kind=kind, width=4, depth=1), shape, 10)
    x = torch.randn(5, *shape)
    assert model(x.flatten(1)).shape == (5, 10)
    torch.testing.assert_close(model.eval()(x.flatten(1)), model(x))


def test_zoo_models_refuse_flat_data_with_a_sentence():
    with pytest.raises(ValueError, match="needs image-like"):
        build(ModelSpec(kind="resnet"), (2,), 2)


@pytest.mark.parametrize("kind", ["resnet", "resnet-noskip", "vgg"])
def test_zoo_surface_matches_moving_a_copy_in_place(kind):
    torch.manual_seed(0)
    x, y = torch.randn(20, 64), torch.randint(0, 3, (20,))
    model = build(ModelSpec(kind=kind, width=4, depth=1), (1, 8, 8), 3)
    model.train()
    with torch.no_grad():
        model(x * 2 + 0.5)  # running statistics other than the defaults
    d1, d2 = landscape.random_direction(model, seed=0), landscape.random_direction(model, seed=1)
    xs, ys = np.array([-0.5, 0.5]), np.array([0.0, 1.0])
    result = landscape.surface(model, "ce", x, y, d1, d2, xs=xs, ys=ys)

    def moved(a, b):
        m = copy.deepcopy(model).eval()
        with torch.no_grad():
            for name, p in m.named_parameters():
                p.add_(a * d1[name] + b * d2[name])
            return F.cross_entropy(m(x), y).item()

    np.testing.assert_allclose(result.loss, [[moved(a, b) for a in xs] for b in ys], rtol=1e-4, atol=1e-6)
