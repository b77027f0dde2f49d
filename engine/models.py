"""The models the app builds.

- `MLP`: fully connected, in four parametrizations (standard, NTK, muP, mean-field), with an
  init scale and optional low-rank initial weights.
- `ResidualMLP`: the same layers with skip connections (smoother loss surfaces).
- `CNN`: a small convolutional net for image-like (digits) and signal-like (MNIST-1D) inputs.
- The zoo for Li et al. 2018's pictures: `ResNet` (He et al. 2016's CIFAR ResNet; ResNet-20 at
  depth 3, width 16), the same without skip connections, and a VGG-style `VGG`, all with
  BatchNorm, on images (2-D convolutions) or signals (1-D).
- `Centered(model, alpha)`: alpha * (f(w) - f(w0)), the lazy/rich knob of Chizat et al. 2019.

Every layer whose scaling depends on the parametrization is a `Dense` layer that knows its
role (input, hidden or output); `lr_multipliers` reads those roles to give each parameter
the learning rate its parametrization asks for.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from engine.settings import Section, is_whole

__all__ = ["Square", "ModelSpec", "Dense", "forward_multiplier", "init_std", "MLP", "ResidualBlock", "ResidualMLP",
           "CNN", "BasicBlock", "ResNet", "VGG", "Centered", "build", "count_parameters", "lr_multipliers", "KINDS",
           "PARAMETRIZATIONS", "ACTIVATIONS"]

KINDS = ("mlp", "resmlp", "cnn", "resnet", "resnet-noskip", "vgg")
PARAMETRIZATIONS = ("standard", "ntk", "mup", "meanfield")
CONV_KINDS = {"cnn": "CNN", "resnet": "ResNet", "resnet-noskip": "ResNet", "vgg": "VGG"}  # kind -> name in sentences


class Square(nn.Module):
    """x -> x^2: the activation with which a two-layer network solves modular addition in
    closed form, and groks it (Gromov 2023)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x


ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "linear": nn.Identity,
    "quadratic": Square,
}
MAX_PARAMETERS = 50_000_000  # a request larger than this is refused, not attempted


@dataclass
class ModelSpec(Section):
    """Everything needed to rebuild a model exactly.

    Attributes:
        kind: "mlp", "resmlp", "cnn", "resnet" (He et al.'s CIFAR ResNet: depth blocks per
            stage, width channels in the first), "resnet-noskip" (the same without skip
            connections) or "vgg" (a VGG-style CNN with BatchNorm).
        width: hidden units per layer (channels for the CNN).
        depth: number of hidden layers (residual blocks, conv layers); 0 is a linear model.
        activation: one of ACTIVATIONS.
        bias: whether layers have biases (initialised at zero).
        parametrization: "standard", "ntk", "mup" or "meanfield" (see `Dense`).
        init_scale: sigma, multiplies every initial weight's standard deviation.
        rank: if set, input and hidden weights start as a random matrix of this rank.
        base_width: the width at which muP and mean-field learning rates equal the base one.
        alpha: if set, the model is wrapped in `Centered(model, alpha)`.
        seed: the seed of the initial weights.
    """

    kind: str = "mlp"
    width: int = 64
    depth: int = 2
    activation: str = "relu"
    bias: bool = True
    parametrization: str = "standard"
    init_scale: float = 1.0
    rank: Optional[int] = None
    base_width: int = 64
    alpha: Optional[float] = None
    seed: int = 0

    def errors(self) -> dict[str, str]:
        """A sentence for each invalid field, keyed by field name (empty when valid)."""
        e = {}
        if self.kind not in KINDS:
            e["kind"] = f"Model kind must be one of {', '.join(KINDS)}, not '{self.kind}'."
        if not is_whole(self.width) or self.width < 1:
            e["width"] = "Width must be a whole number of at least 1."
        elif self.width > 8192:
            e["width"] = "Width above 8192 is too large for this lab."
        if not is_whole(self.depth) or self.depth < 0:
            e["depth"] = "Depth must be a whole number, 0 or more."
        elif self.depth > 64:
            e["depth"] = "Depth above 64 is too large for this lab."
        if self.activation not in ACTIVATIONS:
            e["activation"] = f"Activation must be one of {', '.join(ACTIVATIONS)}."
        if self.parametrization not in PARAMETRIZATIONS:
            e["parametrization"] = (
                f"Parametrization must be one of {', '.join(PARAMETRIZATIONS)}."
            )
        elif self.kind in CONV_KINDS and self.parametrization != "standard":
            e["parametrization"] = f"The {CONV_KINDS[self.kind]} supports only the standard parametrization."
        if not _is_finite(self.init_scale) or self.init_scale <= 0:
            e["init_scale"] = "Init scale must be a positive number."
        if self.rank is not None and (not is_whole(self.rank) or self.rank < 1):
            e["rank"] = "Rank must be a whole number of at least 1, or empty for full rank."
        if not is_whole(self.base_width) or self.base_width < 1:
            e["base_width"] = "Base width must be a whole number of at least 1."
        if self.alpha is not None and (not _is_finite(self.alpha) or self.alpha <= 0):
            e["alpha"] = "Output scale alpha must be a positive number, or empty for none."
        return e




def _is_finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# ---------------------------------------------------------------- layers


class Dense(nn.Linear):
    """y = multiplier * (x W^T) + b, a linear layer that knows its role.

    The parametrizations differ in where the width enters (sigma is `init_scale`):

    | parametrization | init variance of W            | forward multiplier      |
    |-----------------|-------------------------------|-------------------------|
    | standard        | sigma^2 / fan_in              | 1                       |
    | ntk             | sigma^2                       | 1 / sqrt(fan_in)        |
    | mup             | sigma^2 / fan_in; output: sigma^2 / fan_in^2 | 1        |
    | meanfield       | sigma^2 / fan_in; output: sigma^2 | output: 1 / fan_in  |

    Biases start at zero.
    """

    def __init__(self, fan_in: int, fan_out: int, *, bias: bool, role: str, parametrization: str):
        super().__init__(fan_in, fan_out, bias=bias)
        self.role = role
        self.parametrization = parametrization
        self.multiplier = forward_multiplier(parametrization, role, fan_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.multiplier == 1.0:
            return F.linear(x, self.weight, self.bias)  # one fused kernel
        y = F.linear(x, self.weight) * self.multiplier
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, role={self.role}, multiplier={self.multiplier:.4g}"


def forward_multiplier(parametrization: str, role: str, fan_in: int) -> float:
    if parametrization == "ntk":
        return 1.0 / math.sqrt(fan_in)
    if parametrization == "meanfield" and role == "output":
        return 1.0 / fan_in
    return 1.0


def init_std(parametrization: str, role: str, fan_in: int, sigma: float) -> float:
    """The standard deviation of a weight at init (the table in `Dense`)."""
    if parametrization == "ntk":
        return sigma
    if role == "output" and parametrization == "mup":
        return sigma / fan_in
    if role == "output" and parametrization == "meanfield":
        return sigma
    return sigma / math.sqrt(fan_in)


def _gaussian(shape, std: float, generator: torch.Generator, rank: Optional[int] = None):
    """N(0, std^2) entries; with `rank`, a rank-r matrix whose entries have that variance."""
    if rank is None or len(shape) != 2 or rank >= min(shape):
        return torch.randn(shape, generator=generator) * std
    u = torch.randn(shape[0], rank, generator=generator)
    v = torch.randn(rank, shape[1], generator=generator)
    return (u @ v) * (std / math.sqrt(rank))


def _initialise(model: nn.Module, spec: ModelSpec) -> None:
    """Draw every weight from the spec's seed, so the same spec gives the same model."""
    g = torch.Generator().manual_seed(spec.seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, Dense):
                std = init_std(spec.parametrization, module.role, module.in_features, spec.init_scale)
                rank = spec.rank if module.role != "output" else None
                module.weight.copy_(_gaussian(module.weight.shape, std, g, rank))
            elif isinstance(module, (nn.Conv1d, nn.Conv2d)):
                fan_in = module.weight[0].numel()
                module.weight.copy_(_gaussian(module.weight.shape, spec.init_scale / math.sqrt(fan_in), g))
            else:
                continue
            if module.bias is not None:
                module.bias.zero_()


# ---------------------------------------------------------------- models


class MLP(nn.Module):
    """x -> fc1 -> act1 -> ... -> fc{depth} -> act{depth} -> out. Inputs are flattened."""

    def __init__(self, n_in: int, n_out: int, spec: ModelSpec):
        super().__init__()
        layers = OrderedDict()
        width_in = n_in
        for i in range(1, spec.depth + 1):
            role = "input" if i == 1 else "hidden"
            layers[f"fc{i}"] = Dense(width_in, spec.width, bias=spec.bias, role=role,
                                     parametrization=spec.parametrization)
            layers[f"act{i}"] = ACTIVATIONS[spec.activation]()
            width_in = spec.width
        layers["out"] = Dense(width_in, n_out, bias=spec.bias, role="output",
                              parametrization=spec.parametrization)
        self.layers = nn.Sequential(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.flatten(1))


class ResidualBlock(nn.Module):
    """h -> h + act(fc(h))."""

    def __init__(self, width: int, spec: ModelSpec):
        super().__init__()
        self.fc = Dense(width, width, bias=spec.bias, role="hidden", parametrization=spec.parametrization)
        self.act = ACTIVATIONS[spec.activation]()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.act(self.fc(h))


class ResidualMLP(nn.Module):
    """x -> inp -> act -> block1 -> ... -> block{depth} -> out (skip connections)."""

    def __init__(self, n_in: int, n_out: int, spec: ModelSpec):
        super().__init__()
        p = spec.parametrization
        self.inp = Dense(n_in, spec.width, bias=spec.bias, role="input", parametrization=p)
        self.act = ACTIVATIONS[spec.activation]()
        self.blocks = nn.Sequential(*[ResidualBlock(spec.width, spec) for _ in range(spec.depth)])
        self.out = Dense(spec.width, n_out, bias=spec.bias, role="output", parametrization=p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.blocks(self.act(self.inp(x.flatten(1)))))


class CNN(nn.Module):
    """conv -> act -> pool, `depth` times, then a linear readout.

    Works on inputs of shape (channels, length) with 1-D convolutions and (channels, H, W)
    with 2-D ones; flattened inputs are reshaped to `input_shape` first. Pooling halves the
    spatial size while it is at least 4.
    """

    def __init__(self, input_shape: tuple[int, ...], n_out: int, spec: ModelSpec):
        super().__init__()
        if len(input_shape) not in (2, 3):
            raise ValueError(
                "The CNN needs image-like (channels, height, width) or signal-like "
                f"(channels, length) inputs; this data has shape {tuple(input_shape)}."
            )
        self.input_shape = tuple(input_shape)
        conv = nn.Conv1d if len(input_shape) == 2 else nn.Conv2d
        pool = nn.MaxPool1d if len(input_shape) == 2 else nn.MaxPool2d
        layers = OrderedDict()
        channels, size = input_shape[0], min(input_shape[1:])
        for i in range(1, spec.depth + 1):
            layers[f"conv{i}"] = conv(channels, spec.width, kernel_size=3, padding=1, bias=spec.bias)
            layers[f"act{i}"] = ACTIVATIONS[spec.activation]()
            if size >= 4:
                layers[f"pool{i}"] = pool(2)
                size //= 2
            channels = spec.width
        self.features = nn.Sequential(layers)
        with torch.no_grad():
            n_flat = self.features(torch.zeros(1, *input_shape)).numel()
        self.out = Dense(n_flat, n_out, bias=spec.bias, role="output", parametrization="standard")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], *self.input_shape)
        return self.out(self.features(x).flatten(1))


# ---------------------------------------------------------------- the zoo: ResNets and a VGG


def _conv_layers(input_shape: tuple[int, ...], kind: str):
    """(Conv, BatchNorm, MaxPool) classes for (channels, length) or (channels, H, W) inputs."""
    if len(input_shape) not in (2, 3):
        raise ValueError(
            f"The {kind} needs image-like (channels, height, width) or signal-like (channels, "
            f"length) inputs; this data has shape {tuple(input_shape)}."
        )
    if len(input_shape) == 2:
        return nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d
    return nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d


class BasicBlock(nn.Module):
    """conv-bn-act-conv-bn (+ the shortcut) -> act: the block of He et al. 2016's CIFAR ResNets.

    The shortcut is parameter-free ("option A"): when the block halves the size and doubles
    the channels, the input is subsampled and padded with zero channels. Without `skip` the
    block is the same stack with no shortcut (Li et al. 2018's "noshort" networks).
    """

    def __init__(self, conv, norm, channels_in: int, channels: int, stride: int, act, skip: bool):
        super().__init__()
        self.conv1 = conv(channels_in, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm(channels)
        self.act1 = act()
        self.conv2 = conv(channels, channels, 3, padding=1, bias=False)
        self.bn2 = norm(channels)
        self.act2 = act()
        self.skip, self.stride, self.extra = skip, stride, channels - channels_in
        # The spatial axes (1 for signals, 2 for images), known here rather than read from
        # the input's rank in `shortcut`: torch.fx traces a forward whose slicing and padding
        # are fixed, which channel removal (engine.pruning) needs to see into the block.
        self.spatial_axes = self.conv1.weight.dim() - 2

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[(..., *[slice(None, None, self.stride)] * self.spatial_axes)]
        if self.extra:  # zero channels, half before and half after (as the CIFAR ResNets)
            x = F.pad(x, (0, 0) * self.spatial_axes + (self.extra // 2, self.extra - self.extra // 2))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        return self.act2(h + self.shortcut(x) if self.skip else h)


class ResNet(nn.Module):
    """The CIFAR ResNet of He et al. 2016: a 3x3 stem, three stages of `depth` basic blocks
    with width, 2 width and 4 width channels (the last two halve the size), global average
    pooling and a linear readout. 6 depth + 2 layers: depth 3 and width 16 is ResNet-20
    (0.27M parameters on 3-channel images, 10 classes). Flat inputs are reshaped to
    `input_shape`; (channels, length) inputs get 1-D convolutions.
    """

    def __init__(self, input_shape: tuple[int, ...], n_out: int, spec: ModelSpec, skip: bool = True):
        super().__init__()
        conv, norm, _ = _conv_layers(input_shape, "ResNet")
        act = ACTIVATIONS[spec.activation]
        self.input_shape = tuple(input_shape)
        self.stem = conv(input_shape[0], spec.width, 3, padding=1, bias=False)
        self.bn = norm(spec.width)
        self.act = act()
        blocks, channels = [], spec.width
        for stage, width in enumerate((spec.width, 2 * spec.width, 4 * spec.width)):
            for i in range(spec.depth):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(conv, norm, channels, width, stride, act, skip))
                channels = width
        self.blocks = nn.Sequential(*blocks)
        self.out = Dense(channels, n_out, bias=spec.bias, role="output", parametrization="standard")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.act(self.bn(self.stem(x.reshape(x.shape[0], *self.input_shape)))))
        return self.out(h.flatten(2).mean(dim=2))


class VGG(nn.Module):
    """A VGG-style CNN (Simonyan & Zisserman 2015, with BatchNorm): three stages of `depth`
    conv-bn-act layers with width, 2 width and 4 width channels, each stage ending in a 2x
    max-pool while the size allows, then global average pooling and a linear readout."""

    def __init__(self, input_shape: tuple[int, ...], n_out: int, spec: ModelSpec):
        super().__init__()
        conv, norm, pool = _conv_layers(input_shape, "VGG")
        self.input_shape = tuple(input_shape)
        layers, channels, size = OrderedDict(), input_shape[0], min(input_shape[1:])
        for stage, width in enumerate((spec.width, 2 * spec.width, 4 * spec.width), start=1):
            for i in range(1, max(spec.depth, 1) + 1):
                layers[f"conv{stage}_{i}"] = conv(channels, width, 3, padding=1, bias=False)
                layers[f"bn{stage}_{i}"] = norm(width)
                layers[f"act{stage}_{i}"] = ACTIVATIONS[spec.activation]()
                channels = width
            if size >= 2:
                layers[f"pool{stage}"] = pool(2)
                size //= 2
        self.features = nn.Sequential(layers)
        self.out = Dense(channels, n_out, bias=spec.bias, role="output", parametrization="standard")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x.reshape(x.shape[0], *self.input_shape))
        return self.out(h.flatten(2).mean(dim=2))


class Centered(nn.Module):
    """alpha * (f(w) - f(w0)), with w0 a frozen copy of the weights at wrap time.

    The output is exactly zero at wrap time, so the network starts from the zero function
    whatever alpha is. Large alpha makes training lazy (the model stays close to its
    linearization); small alpha makes it rich. Train it with the loss divided by alpha^2.

    The frozen weights are buffers (not parameters): analyses that walk
    `named_parameters()` see only the trainable `model.*` weights, and `state_dict()`
    keeps w0 so a reloaded model is the same function.
    """

    def __init__(self, model: nn.Module, alpha: float):
        super().__init__()
        self.model = model
        self.alpha = float(alpha)
        self.w0 = nn.Module()
        for name, p in model.named_parameters():
            self.w0.register_buffer(name.replace(".", "__"), p.detach().clone())

    def initial_parameters(self) -> dict[str, torch.Tensor]:
        return {name.replace("__", "."): b for name, b in self.w0.named_buffers()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            f0 = functional_call(self.model, self.initial_parameters(), (x,))
        return self.alpha * (self.model(x) - f0)


# ---------------------------------------------------------------- building


def build(spec: ModelSpec | dict, input_shape: tuple[int, ...], n_outputs: int) -> nn.Module:
    """Build the model a spec describes, on the CPU, initialised from `spec.seed`.

    Args:
        spec: a ModelSpec or its dict.
        input_shape: one sample's shape (e.g. (2,), (1, 8, 8)).
        n_outputs: classes for classification, target dimensions for regression.

    Raises:
        ValueError: with a sentence, for invalid settings or a model too large to build.
    """
    spec = ModelSpec.from_dict(spec) if isinstance(spec, dict) else spec
    errors = spec.errors()
    if errors:
        raise ValueError(" ".join(errors.values()))
    n_in = math.prod(input_shape)
    estimate = n_in * spec.width + spec.depth * spec.width * (spec.width + 1) + spec.width * n_outputs
    if spec.kind in ("resnet", "resnet-noskip", "vgg"):  # 3x3 convs of w, 2w, 4w channels, 2 per block
        estimate = 9 * 2 * max(spec.depth, 1) * (1 + 4 + 16) * spec.width**2
    if estimate > MAX_PARAMETERS:
        raise ValueError(
            f"This model would have about {estimate:,} parameters; the lab's limit is "
            f"{MAX_PARAMETERS:,}. Reduce the width or depth."
        )
    if spec.kind == "mlp":
        model = MLP(n_in, n_outputs, spec)
    elif spec.kind == "resmlp":
        model = ResidualMLP(n_in, n_outputs, spec)
    elif spec.kind == "cnn":
        model = CNN(tuple(input_shape), n_outputs, spec)
    elif spec.kind == "vgg":
        model = VGG(tuple(input_shape), n_outputs, spec)
    else:
        model = ResNet(tuple(input_shape), n_outputs, spec, skip=spec.kind == "resnet")
    _initialise(model, spec)
    if spec.alpha is not None:
        model = Centered(model, spec.alpha)
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def lr_multipliers(model: nn.Module, optimizer: str, base_width: int = 64) -> dict[str, float]:
    """Each parameter's learning-rate multiplier, keyed like `named_parameters()`.

    muP (Yang & Hu 2021, tables for SGD and Adam), with m = width / base_width the
    layer's width relative to the base width:
    - SGD: input weights and input and hidden biases x m, hidden weights x 1, output
      weights x 1/m.
    - Adam (and AdamW): input layer and biases x 1, hidden and output weights x 1/m.
    Mean-field: SGD x m on every parameter (the 1/n readout makes each unit's gradient O(1/n));
    Adam x 1. Standard and NTK: 1 everywhere.
    """
    adaptive = optimizer in ("adam", "adamw")
    return {name: _multiplier(*_owner(model, name), adaptive, base_width)
            for name, _ in model.named_parameters()}


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    """The layer a parameter belongs to, and the parameter's own name in it.

    A masked (pruned) weight lives at `<layer>.parametrizations.weight.original`
    (torch.nn.utils.parametrize); it still belongs to <layer>.
    """
    parts = name.split(".")
    if "parametrizations" in parts:
        i = parts.index("parametrizations")
        return model.get_submodule(".".join(parts[:i])), parts[i + 1]
    return model.get_submodule(".".join(parts[:-1])), parts[-1]


def _multiplier(module: nn.Module, pname: str, adaptive: bool, base_width: int) -> float:
    if not isinstance(module, Dense) or module.parametrization in ("standard", "ntk"):
        return 1.0
    # The layer's width: what grows with the network (fan_in of the readout, fan_out elsewhere).
    width = module.in_features if module.role == "output" else module.out_features
    m = width / base_width
    if module.parametrization == "meanfield":
        return 1.0 if adaptive else m
    if module.role == "output":
        return 1.0 if pname == "bias" else 1.0 / m
    if pname == "bias" or module.role == "input":
        return 1.0 if adaptive else m
    return 1.0 / m if adaptive else 1.0  # hidden weights
