"""Level sets of a conv net that takes images (N, C, H, W), with BatchNorm: the walk on images
is the walk on their flat rows through the same network, and every confidence it reports is the
network's own softmax at the image it reports."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine import levelset

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (1, 8, 8)  # digits-shaped images


def conv_net(seed=0):
    """Conv -> BatchNorm -> ReLU -> Linear on 8x8 images, in float64, its BatchNorm statistics
    moved off their defaults so that eval mode matters."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 64, 3)).double()
    with torch.no_grad():
        model(torch.rand(32, *SHAPE, dtype=torch.float64) * 3)  # one training-mode pass: running stats move
    return model


class FlatInputs(nn.Module):
    """The same network taking flat rows (B, 64): the reference the image walk must equal."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, rows):
        return self.model(rows.reshape(len(rows), *SHAPE))


def images(n, seed):
    return torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


SETTINGS = dict(steps=15, step_size=0.1, eps=1e-3, threshold=0.05)


def test_a_walk_on_images_is_the_walk_on_their_flat_rows():
    model, sources, targets = conv_net(), images(3, 1), images(3, 2)
    on_images = levelset.traverse(model, sources, targets, **SETTINGS)
    on_rows = levelset.traverse(FlatInputs(model), sources.flatten(1), targets.flatten(1), **SETTINGS)
    np.testing.assert_allclose(on_images.path, on_rows.path, atol=1e-12)
    np.testing.assert_array_equal(on_images.accepted, on_rows.accepted)
    assert on_images.input_shape == SHAPE and on_images.ssim.shape == (16, 3)


def test_reported_confidences_are_the_conv_nets_softmax_at_the_reported_images():
    model = conv_net()
    result = levelset.traverse(model, images(2, 1), images(2, 2), **SETTINGS)
    with torch.no_grad():
        p = F.softmax(model.eval()(torch.as_tensor(result.images()).reshape(-1, *SHAPE)), dim=1).reshape(16, 2, 3)
    expected = np.take_along_axis(p.numpy(), result.source_class[None, :, None].repeat(16, 0), axis=2)[..., 0]
    np.testing.assert_allclose(result.confidence, expected, atol=1e-12)


def test_one_image_of_the_given_shape_walks_alone():
    model, source, target = conv_net(), images(1, 1)[0], images(1, 2)[0]
    result = levelset.traverse(model, source, target, input_shape=SHAPE, **SETTINGS)
    batch = levelset.traverse(model, source[None], target[None], **SETTINGS)
    assert result.path.shape == (16, 64) and not result.batched
    np.testing.assert_allclose(result.path, batch.path[:, 0], atol=1e-12)


def test_the_conv_net_keeps_its_training_mode_and_batchnorm_statistics():
    model = conv_net().train()
    before = model[1].running_mean.clone()
    levelset.traverse(model, images(2, 1), images(2, 2), steps=3)
    assert model.training and torch.equal(model[1].running_mean, before)


def test_the_triangle_and_the_width_probe_take_images():
    model, (source, a, b) = conv_net(), images(3, 4)
    flat = FlatInputs(model)
    triangle = levelset.triangle_confidence(model, source, a, b, resolution=4, input_shape=SHAPE)
    reference = levelset.triangle_confidence(flat, source.flatten(), a.flatten(), b.flatten(), resolution=4)
    np.testing.assert_allclose(triangle.confidence, reference.confidence, atol=1e-12)
    probe = levelset.width_probe(model, source, a - source, directions=3, input_shape=SHAPE)
    expected = levelset.width_probe(flat, source.flatten(), (a - source).flatten(), directions=3)
    np.testing.assert_allclose(probe.confidence, expected.confidence, atol=1e-12)


def test_pgd_on_images_returns_images_that_equal_the_attack_on_rows():
    model, x, y = conv_net(), images(4, 5), torch.tensor([0, 1, 2, 0])
    on_images = levelset.pgd_attack(model, x, y, eps=0.1, alpha=0.03, steps=5)
    on_rows = levelset.pgd_attack(FlatInputs(model), x.flatten(1), y, eps=0.1, alpha=0.03, steps=5)
    assert on_images.shape == x.shape
    torch.testing.assert_close(on_images.flatten(1), on_rows, atol=1e-12, rtol=0)


def test_inputs_of_another_shape_than_the_given_one_are_refused_with_a_sentence():
    with pytest.raises(ValueError, match="neither one sample of shape"):
        levelset.traverse(conv_net(), torch.rand(2, 1, 6, 6), torch.rand(2, 1, 6, 6), input_shape=SHAPE)
