"""Train and eval modes: one way to evaluate a model in eval mode and give it its modes back.

`model.eval()` switches every submodule (dropout off, batch-norm on its running statistics)
and `model.train(flag)` afterwards sets every submodule to one flag, which loses a model whose
parts were in different modes (a frozen batch-norm inside a training network). `evaluating`
remembers each submodule's own flag and restores it, also when the body raises.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import nn

__all__ = ["evaluating"]


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode for the duration of the block; afterwards every submodule has its own mode back.

    Example:
        with torch.no_grad(), evaluating(model):
            predicted = model(x).argmax(dim=1)
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training
