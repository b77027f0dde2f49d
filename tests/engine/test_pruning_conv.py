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


# ---------------------------------------------------------------- removing conv channels


def lab_model(kind, seed=0):
    """One of the lab's conv nets on digits-shaped images, its BatchNorms moved off their defaults."""
    torch.manual_seed(seed)
    return with_batchnorm_off_defaults(build(ModelSpec(kind=kind, width=4, depth=2), SHAPE, 3).double())


def with_batchnorm_off_defaults(model):
    """Random BatchNorm scales and shifts, and running statistics from one training-mode pass,
    so that a removal that mishandles them shows; the model comes back in eval mode."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
        model.train()(images(32, seed=9) * 2)
    return model.eval()


def half_the_channels(model, x=None):
    return pruning.channel_masks(pruning.channel_scores(model, x), 0.5)


def assert_removal_matches_the_masked_model(model, keep, x=None):
    small, counts = pruning.remove_channels(model, keep, x)
    masked = pruning.mask_channels(model, keep, x)
    inputs = images(16, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(small(inputs), masked(inputs), atol=1e-5, rtol=0)
    assert counts["parameters"][1] < counts["parameters"][0] == sum(p.numel() for p in model.parameters())
    assert counts["parameters"][1] == sum(p.numel() for p in small.parameters())
    return small, counts


def test_removing_half_the_channels_of_the_lab_vgg_gives_the_masked_models_outputs():
    model = lab_model("vgg")
    keep = half_the_channels(model)
    small, counts = assert_removal_matches_the_masked_model(model, keep)
    assert counts["channels"]["features.conv1_1"] == [4, 2]
    assert small.features.conv1_1.out_channels == 2 and small.features.bn1_1.num_features == 2
    assert small.features.conv1_2.in_channels == 2 and small.out.in_features == 8


def test_removing_channels_of_a_sequential_conv_net_drops_their_blocks_of_linear_inputs():
    model, x = conv_net(), images(4)
    keep = half_the_channels(model, x)
    small, _ = assert_removal_matches_the_masked_model(model, keep, x)
    assert small[4].in_channels == 2 and small[8].in_features == 3 * 16  # 3 of 6 channels, 4x4 each


def test_a_masked_channel_is_exactly_zero_after_its_batchnorm():
    model, x = conv_net(), images(4)
    keep = {"0": torch.tensor([True, False, True, False])}
    masked = pruning.mask_channels(model, keep, x)
    with torch.no_grad():
        after_norm = masked[1](masked[0](images(8)))
    assert (after_norm[:, [1, 3]] == 0).all() and (after_norm[:, [0, 2]] != 0).any()


def test_channel_scores_are_the_l1_norms_of_the_filters():
    model = lab_model("vgg")
    scores = pruning.channel_scores(model)
    torch.testing.assert_close(scores["features.conv2_1"],
                               model.features.conv2_1.weight.detach().abs().sum(dim=(1, 2, 3)))


def test_channels_inside_a_residual_block_can_go_but_not_those_on_the_shortcut():
    model = lab_model("resnet")
    scores = pruning.channel_scores(model)
    assert "blocks.0.conv1" in scores and "stem" not in scores and "blocks.0.conv2" not in scores
    assert_removal_matches_the_masked_model(model, {"blocks.0.conv1": torch.tensor([True, False, True, True])})


def resnet_inner_convs(model):
    """The first conv of each residual block: its channels reach only the block's second conv."""
    return [name for name, m in model.named_modules() if name.endswith(".conv1") and isinstance(m, nn.Conv2d)]


def test_every_block_of_the_lab_resnet_can_lose_inner_channels_the_downsampling_ones_too():
    model = lab_model("resnet")  # width 4, depth 2: blocks 2 and 4 halve the size and pad the shortcut
    scores = pruning.channel_scores(model)
    assert sorted(scores) == [f"blocks.{i}.conv1" for i in range(6)]
    keep = pruning.channel_masks(scores, 0.5)
    small, counts = assert_removal_matches_the_masked_model(model, keep)
    assert counts["channels"]["blocks.2.conv1"] == [8, 4] and counts["channels"]["blocks.4.conv1"] == [16, 8]
    block = small.blocks[2]
    assert (block.conv1.out_channels, block.bn1.num_features, block.conv2.in_channels) == (4, 4, 4)
    assert block.conv2.out_channels == 8  # what the addition receives keeps its size


def test_a_downsampling_block_of_the_lab_resnet_on_signals_can_lose_inner_channels():
    torch.manual_seed(0)
    model = build(ModelSpec(kind="resnet", width=4, depth=1), (1, 40), 3).double().eval()
    x = torch.rand(16, 1, 40, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    keep = {"blocks.1.conv1": torch.tensor([True, False] * 4)}
    small, _ = pruning.remove_channels(model, keep)
    with torch.no_grad():
        torch.testing.assert_close(small(x), pruning.mask_channels(model, keep)(x), atol=1e-5, rtol=0)
    assert small.blocks[1].conv2.in_channels == 4


def test_a_resnet_without_skips_can_lose_channels_of_every_conv():
    model = lab_model("resnet-noskip")
    scores = pruning.channel_scores(model)
    assert len(scores) == 13  # the stem and two convs in each of six blocks
    assert_removal_matches_the_masked_model(model, pruning.channel_masks(scores, 0.5))


class UserBlock(nn.Module):
    """torchvision's BasicBlock: a 1x1 conv and BatchNorm on the shortcut when the block
    halves the size or changes the channels."""

    def __init__(self, channels_in, channels, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = None
        if stride != 1 or channels_in != channels:
            self.downsample = nn.Sequential(nn.Conv2d(channels_in, channels, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(channels))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + identity)


class UserResNet(nn.Module):
    """A user's torchvision-style ResNet: stem, two stages of two blocks, pooling, readout."""

    def __init__(self, width=4, classes=3):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(UserBlock(width, width), UserBlock(width, width))
        self.layer2 = nn.Sequential(UserBlock(width, 2 * width, stride=2), UserBlock(2 * width, 2 * width))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x):
        h = self.layer2(self.layer1(self.relu(self.bn1(self.conv1(x)))))
        return self.fc(torch.flatten(self.avgpool(h), 1))


def user_resnet():
    torch.manual_seed(0)
    return with_batchnorm_off_defaults(UserResNet().double())


def test_a_user_resnet_can_lose_the_inner_channels_of_every_block_and_nothing_on_a_shortcut():
    model, x = user_resnet(), images(2)
    paths = pruning.channel_paths(model, x)
    removable = sorted(name for name, path in paths.items() if isinstance(path, pruning.ChannelPath))
    assert removable == resnet_inner_convs(model) == ["layer1.0.conv1", "layer1.1.conv1", "layer2.0.conv1",
                                                      "layer2.1.conv1"]
    assert "goes to" in paths["conv1"] and "add" in paths["layer2.0.downsample.0"]
    keep = pruning.channel_masks(pruning.channel_scores(model, x), 0.5)
    small, counts = assert_removal_matches_the_masked_model(model, keep, x)
    assert counts["channels"]["layer2.0.conv1"] == [8, 4] and small.layer2[0].conv2.in_channels == 4


@pytest.mark.parametrize("conv", ["stem", "blocks.0.conv2", "blocks.2.conv2"])  # blocks.2 halves the size
def test_removing_channels_where_a_residual_connection_reads_them_is_refused_with_a_sentence(conv):
    model = lab_model("resnet")
    channels = model.get_submodule(conv).out_channels
    keep = {conv: torch.arange(channels) > 0}
    with pytest.raises(ValueError, match=f"Channels of {conv} cannot be removed: .*Residual networks"):
        pruning.remove_channels(model, keep)


def test_a_forward_that_hard_codes_the_channel_count_is_refused_with_a_sentence():
    class HardCoded(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(4 * 64, 3)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).view(-1, 4 * 64))

    model = HardCoded()
    keep = {"conv": torch.tensor([True, True, False, False])}
    with pytest.raises(ValueError, match="hard-code a channel count"):
        pruning.remove_channels(model, keep, images(2, dtype=torch.float32))


def test_a_channel_mask_of_the_wrong_size_is_refused_with_a_sentence():
    with pytest.raises(ValueError, match="has shape \\(3,\\); the layer has 4 channels"):
        pruning.remove_channels(lab_model("vgg"), {"features.conv1_1": torch.tensor([True, False, True])})


# ---------------------------------------------------------------- the recipe on a stored run


class Quiet:
    cancelled = False

    def report(self, *args, **kwargs):
        pass

    def check(self):
        pass


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A store with a VGG and an MLP trained a few steps on digits."""
    from engine.experiment import Experiment, train_job
    from engine.store import RunStore
    from engine.train import TrainConfig

    store = RunStore(tmp_path_factory.mktemp("store"))
    config = TrainConfig(steps=20, eval_every=20, checkpoint_every=20)
    ids = {kind: train_job(Quiet(), Experiment("digits", {}, ModelSpec(kind=kind, width=4, depth=1), config),
                           store=store, device="cpu")["run_id"] for kind in ("vgg", "mlp")}
    return store, ids


def test_the_recipe_removes_channels_of_a_stored_vgg_and_keeps_the_masked_accuracy(stored):
    from engine import recipes

    store, ids = stored
    result = recipes.channel_removal(Quiet(), store, ids["vgg"], sparsity=0.5)
    assert result.layers == ["features.conv1_1", "features.conv2_1", "features.conv3_1"]
    assert result.channels.tolist() == [[4, 2], [8, 4], [16, 8]] and result.parameters[1] < result.parameters[0]
    assert result.accuracy[1] == result.accuracy[2] and result.largest_difference < 1e-4 and not result.unsafe


def test_the_recipe_says_an_mlp_has_no_channels_to_remove(stored):
    from engine import recipes

    store, ids = stored
    with pytest.raises(ValueError, match="no conv layer whose channels can be removed"):
        recipes.channel_removal(Quiet(), store, ids["mlp"])
