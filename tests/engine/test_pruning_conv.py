"""Pruning conv nets with BatchNorm on images (N, C, H, W): scores against autograd and
closed forms, masks against `torch.nn.utils.prune`, and structured channel removal against
the masked model it replaces."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune as torch_prune

from engine import pruning
from engine.models import ModelSpec, build

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (1, 8, 8)  # digits-shaped images


def conv_net(seed=0, dtype=torch.float64):
    """Conv-BN-ReLU-pool, Conv-BN-ReLU, Flatten, Linear on 8x8 images; BatchNorm statistics and
    affine parameters moved off their defaults so that they matter."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 16, 3),
    ).to(dtype)
    with torch.no_grad():
        for bn in (model[1], model[5]):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
        model(images(32, seed=9, dtype=dtype) * 2)  # one training-mode pass moves the running statistics
    return model.eval()


def images(n, seed=1, dtype=torch.float64):
    return torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def labels(n):
    return torch.arange(n) % 3


WEIGHTS = ["0.weight", "4.weight", "8.weight"]


# ---------------------------------------------------------------- scores on images


@pytest.mark.parametrize("method", sorted(pruning.METHODS))
def test_every_score_runs_on_images_and_has_each_weights_shape(method):
    model = conv_net()
    scores = pruning.scores(model, method, images(12), labels(12))
    assert list(scores) == WEIGHTS
    for name, weight in pruning.weights(model).items():
        if name in scores:
            assert scores[name].shape == weight.shape and torch.isfinite(scores[name]).all()


def test_taylor_on_a_conv_net_is_weight_times_the_autograd_gradient_in_eval_mode():
    model, x, y = conv_net(), images(12), labels(12)
    reference = copy.deepcopy(model).eval()
    F.cross_entropy(reference(x), y).backward()
    scores = pruning.scores(model, "taylor", x, y)
    for name, p in reference.named_parameters():
        if name in scores:
            torch.testing.assert_close(scores[name], (p.detach() * p.grad).abs())


def test_neuron_scores_of_a_conv_layer_are_each_filters_l1_norm():
    model = conv_net()
    scores = pruning.scores(model, "l1_neuron")
    filters = model[4].weight.detach().abs().sum(dim=(1, 2, 3))
    torch.testing.assert_close(scores["4.weight"], filters[:, None, None, None].expand(6, 4, 3, 3))


def fold_batchnorm(model):
    """The same function without BatchNorm: each BN's scale and shift folded into its conv."""
    layers = []
    for module in model:
        if isinstance(module, nn.BatchNorm2d):
            conv = layers[-1]
            scale = module.weight / (module.running_var + module.eps).sqrt()
            with torch.no_grad():
                conv.weight.mul_(scale[:, None, None, None])
                conv.bias.copy_((conv.bias - module.running_mean) * scale + module.bias)
        else:
            layers.append(copy.deepcopy(module))
    return nn.Sequential(*layers).eval()


def test_synflow_of_a_batchnorm_net_equals_that_of_the_net_with_batchnorm_folded_in():
    """R is linear in each weight, so folding the positive BN scale s into a conv (w' = s w)
    leaves |w dR/dw| = |w' dR/dw'|: the scores must agree weight for weight."""
    model = conv_net()
    folded = fold_batchnorm(model)
    with torch.no_grad():
        torch.testing.assert_close(folded(images(4)), model(images(4)))  # the fold is right
    ours = pruning.scores(model, "synflow", images(2))
    theirs = pruning.scores(folded, "synflow", images(2))
    for name, other in zip(WEIGHTS, ["0.weight", "3.weight", "6.weight"]):
        torch.testing.assert_close(ours[name], theirs[other], rtol=1e-9, atol=0)


# ---------------------------------------------------------------- masks as torch.nn.utils.prune


def test_masks_through_torch_prune_give_the_same_outputs_and_zeros_as_apply():
    model, x = conv_net(), images(16)
    masks = pruning.masks(pruning.scores(model, "random", seed=3), 0.6)
    ours = pruning.apply(copy.deepcopy(model), masks)
    theirs = copy.deepcopy(model)
    for name, mask in masks.items():
        module, attr = name.rsplit(".", 1)
        torch_prune.custom_from_mask(theirs.get_submodule(module), attr, mask)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)
    for name, weight in pruning.weights(ours).items():
        if name in masks:
            module, attr = name.rsplit(".", 1)
            torch.testing.assert_close(weight == 0, getattr(theirs.get_submodule(module), attr) == 0)


def test_layer_magnitude_masks_are_torch_l1_unstructured():
    model = conv_net()
    ours = pruning.masks(pruning.scores(model, "magnitude"), 0.3, scope="layer")
    for name in WEIGHTS:
        module, attr = name.rsplit(".", 1)
        theirs = torch_prune.l1_unstructured(copy.deepcopy(model.get_submodule(module)), attr, amount=0.3)
        torch.testing.assert_close(ours[name], getattr(theirs, f"{attr}_mask").bool())


def test_global_magnitude_masks_are_torch_global_unstructured():
    model, copied = conv_net(), conv_net()
    ours = pruning.masks(pruning.scores(model, "magnitude"), 0.7, scope="global")
    parameters = [(copied.get_submodule(name.rsplit(".", 1)[0]), "weight") for name in WEIGHTS]
    torch_prune.global_unstructured(parameters, pruning_method=torch_prune.L1Unstructured, amount=0.7)
    for name, (module, _) in zip(WEIGHTS, parameters):
        torch.testing.assert_close(ours[name], module.weight_mask.bool())


def test_a_pruned_conv_net_keeps_its_zeros_through_training_on_images():
    model = pruning.apply(conv_net(dtype=torch.float32).train(), pruning.masks(
        pruning.scores(conv_net(dtype=torch.float32), "magnitude"), 0.5))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(3):
        optimizer.zero_grad()
        F.cross_entropy(model(images(16, dtype=torch.float32)), labels(16)).backward()
        optimizer.step()
    assert pruning.sparsity_of(model)["total"] == pytest.approx(0.5, abs=1e-3)
