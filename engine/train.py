"""Training, one step at a time.

`Trainer` owns a model, a dataset (kept on the device), an optimizer and a `History`.
`step()` takes one optimizer step; `run()` takes many, evaluates and checkpoints on a
schedule, stops when asked, and ends a run whose loss turns NaN or infinite as
"diverged" with the step and a sentence instead of raising.

Per-step losses stay on the device and are read back in small batches, so a GPU is not
made to wait for the host after every step (a `.item()` per step is a synchronisation).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

from engine.data import Dataset
from engine.device import pick
from engine.levelset import pgd_attack
from engine.losses import LOSSES, loss_function
from engine.models import Centered, lr_multipliers
from engine.modes import evaluating
from engine.results import History
from engine.settings import Section, is_whole

__all__ = ["TrainConfig", "Outcome", "make_loss", "accuracy", "make_optimizer", "Minibatches", "evaluation_subset",
           "Trainer", "OPTIMIZERS", "FLUSH_EVERY", "LOSSES"]

OPTIMIZERS = ("sgd", "adam", "adamw", "gd")
FLUSH_EVERY = 16  # steps between reading the per-step losses back from the device


@dataclass
class TrainConfig(Section):
    """How to train.

    Attributes:
        optimizer: "sgd" (with momentum), "adam", "adamw" (Adam with decoupled weight decay,
            Loshchilov & Hutter 2019), or "gd" (full-batch gradient descent).
        lr: base learning rate (muP and mean-field scale it per layer).
        momentum: SGD momentum (ignored by Adam and GD).
        weight_decay: L2 penalty added by the optimizer.
        batch_size: samples per step (GD uses the whole training split).
        steps: total optimizer steps.
        loss: "ce", "mse", or "auto" (cross-entropy for classification, MSE for regression).
        eval_every: steps between evaluations of train and test loss and accuracy.
        checkpoint_every: steps between saved weights (step 0 and the last step always).
        eval_samples: evaluations use at most this many samples of each split (a fixed subset).
        seed: seed of the minibatch order.
        adversarial_eps: the L_inf radius, in input units, of PGD adversarial training
            (Madry et al. 2018): each step trains on the worst case of every input within
            this box (found by `engine.levelset.pgd_attack`) instead of the input. 0 is off.
            Classification only.
        adversarial_steps: PGD steps per training step (each costs a forward and backward pass).
        adversarial_step_size: PGD's step per coordinate; None for 2.5 eps / steps.
    """

    optimizer: str = "adam"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 64
    steps: int = 1000
    loss: str = "auto"
    eval_every: int = 100
    checkpoint_every: int = 100
    eval_samples: int = 1024
    seed: int = 0
    adversarial_eps: float = 0.0
    adversarial_steps: int = 7
    adversarial_step_size: Optional[float] = None

    def errors(self) -> dict[str, str]:
        """A sentence for each invalid field, keyed by field name (empty when valid)."""
        e = {}
        if self.optimizer not in OPTIMIZERS:
            e["optimizer"] = f"Optimizer must be one of {', '.join(OPTIMIZERS)}."
        if not _positive_number(self.lr):
            e["lr"] = "Learning rate must be a positive number."
        elif self.lr > 100:
            e["lr"] = "A learning rate above 100 only diverges; choose a smaller one."
        if not _number(self.momentum) or not 0 <= self.momentum < 1:
            e["momentum"] = "Momentum must be at least 0 and below 1."
        if not _number(self.weight_decay) or self.weight_decay < 0:
            e["weight_decay"] = "Weight decay must be 0 or a positive number."
        for name, low, high in (("batch_size", 1, 1_000_000), ("steps", 1, 10_000_000),
                                ("eval_every", 1, 10_000_000), ("checkpoint_every", 1, 10_000_000),
                                ("eval_samples", 1, 10_000_000), ("adversarial_steps", 1, 1000)):
            value = getattr(self, name)
            if not is_whole(value) or not low <= value <= high:
                e[name] = f"{name.replace('_', ' ').capitalize()} must be a whole number from {low} to {high:,}."
        if self.loss not in LOSSES:
            e["loss"] = f"Loss must be one of {', '.join(LOSSES)}."
        if not _number(self.adversarial_eps) or self.adversarial_eps < 0:
            e["adversarial_eps"] = "Adversarial eps must be 0 (off) or a positive number."
        if self.adversarial_step_size is not None and not _positive_number(self.adversarial_step_size):
            e["adversarial_step_size"] = ("Adversarial step size must be empty (2.5 eps / steps) "
                                          "or a positive number.")
        return e

    @property
    def adversarial(self) -> bool:
        """Whether training is adversarial (PGD on every batch)."""
        return self.adversarial_eps > 0



def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _positive_number(v) -> bool:
    return _number(v) and v > 0



@dataclass
class Outcome:
    """How a call to `Trainer.run` ended: "done", "stopped" or "diverged", with a sentence."""

    status: str
    step: int
    message: str


# ---------------------------------------------------------------- losses


def make_loss(name: str, task: str, n_classes: int, alpha: Optional[float] = None) -> Callable:
    """(output, target) -> scalar: `engine.losses.loss_function(name, task)`, scaled for a
    `Centered` model. MSE on classification regresses one-hot targets, one per output
    (`n_classes` of them for the lab's models).

    With an output scale alpha (a `Centered` model) the loss is divided by alpha^2, as in
    Chizat, Oyallon & Bach 2019, so the effective learning rate does not grow with alpha.
    """
    loss = loss_function(name, task)
    if not alpha or alpha == 1.0:
        return loss  # F.cross_entropy itself for "ce", which fast paths recognise
    scale = 1.0 / alpha**2

    def scaled(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return loss(output, target) * scale

    return scaled


def accuracy(output: torch.Tensor, target: torch.Tensor, task: str) -> float:
    if task != "classification":
        return float("nan")
    return (output.argmax(dim=1) == target).float().mean().item()


# ---------------------------------------------------------------- optimizer


def make_optimizer(model: nn.Module, config: TrainConfig, base_width: int = 64) -> torch.optim.Optimizer:
    """The optimizer with one parameter group per learning-rate multiplier (muP, mean-field)."""
    multipliers = lr_multipliers(model, config.optimizer, base_width)
    groups: dict[float, list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault(multipliers.get(name, 1.0), []).append(p)
    param_groups = [{"params": ps, "lr": config.lr * m} for m, ps in groups.items()]
    if config.optimizer == "adam":
        return torch.optim.Adam(param_groups, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(param_groups, lr=config.lr, weight_decay=config.weight_decay)
    momentum = config.momentum if config.optimizer == "sgd" else 0.0
    return torch.optim.SGD(param_groups, lr=config.lr, momentum=momentum,
                           weight_decay=config.weight_decay)


# ---------------------------------------------------------------- batches


class Minibatches:
    """The minibatch order of a config: a fresh random permutation of the training set per
    epoch, from a generator seeded with `config.seed`, cut into batches of `batch_size` (the
    whole set for "gd" or a batch at least that big). `Trainer` and
    `engine.ensemble.EnsembleTrainer` both draw from it, so their members see the same batches.
    """

    def __init__(self, n: int, config: TrainConfig, device: torch.device):
        self.n, self.device = n, device
        self.size = n if config.optimizer == "gd" else min(config.batch_size, n)
        self._order = torch.Generator().manual_seed(config.seed)
        self._epoch = torch.empty(0, dtype=torch.long)
        self._cursor = 0

    def next(self) -> Optional[torch.Tensor]:
        """The indices of the next batch, or None for the whole training set."""
        if self.size == self.n:
            return None
        if self._cursor + self.size > len(self._epoch):
            self._epoch = torch.randperm(self.n, generator=self._order).to(self.device)
            self._cursor = 0
        index = self._epoch[self._cursor:self._cursor + self.size]
        self._cursor += self.size
        return index


def evaluation_subset(n: int, config: TrainConfig, device: torch.device) -> torch.Tensor:
    """The indices of the evaluation subset of a split of n samples: at most `eval_samples`,
    fixed by the seed."""
    count = min(n, config.eval_samples)
    index = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed + 1))[:count]
    return index.to(device)


# ---------------------------------------------------------------- trainer


class Trainer:
    """Trains `model` on `data` as `config` says, one step at a time.

    Args:
        model: any nn.Module mapping a batch of flattened inputs to outputs.
        data: the dataset; it is moved to the device once.
        config: the training settings (validated here; ValueError with sentences).
        device: where to train; `engine.device.pick()` by default.
        base_width: muP's base width (see `engine.models.lr_multipliers`).
        keep_checkpoints: keep the weights at each checkpoint in `self.checkpoints`.
    """

    def __init__(self, model: nn.Module, data: Dataset, config: TrainConfig, *,
                 device: torch.device | str | None = None, base_width: int = 64,
                 keep_checkpoints: bool = True):
        errors = config.errors()
        if errors:
            raise ValueError(" ".join(errors.values()))
        if config.adversarial and data.task != "classification":
            raise ValueError("Adversarial training attacks the confidence in class labels; this data is a "
                             "regression, so set adversarial eps to 0.")
        self.config = config
        self.device = torch.device(device) if device is not None else pick()
        self.model = model.to(self.device)
        self.data = data.to(self.device)
        alpha = model.alpha if isinstance(model, Centered) else None
        self.loss_fn = make_loss(config.loss, data.task, data.n_classes, alpha)
        # The history reports the plain loss of the function, comparable across alphas, not
        # the loss / alpha^2 whose gradients train a Centered model.
        self.loss_unit = alpha**2 if alpha else 1.0
        self.base_width = base_width
        self.optimizer = make_optimizer(model, config, base_width)
        self.history = History()
        self.checkpoints: dict[int, dict[str, torch.Tensor]] = {}
        self.keep_checkpoints = keep_checkpoints
        self.step_count = 0
        self.diverged_at: Optional[int] = None
        self._batches = Minibatches(len(self.data.x_train), config, self.device)
        self._pending: list[torch.Tensor] = []
        self._eval_train = self._fixed_subset(self.data.x_train, self.data.y_train)
        self._eval_test = self._fixed_subset(self.data.x_test, self.data.y_test)

    # -- batches

    def _fixed_subset(self, x: torch.Tensor, y: torch.Tensor):
        index = evaluation_subset(len(x), self.config, self.device)
        return x[index], y[index]

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        index = self._batches.next()
        if index is None:
            return self.data.x_train, self.data.y_train
        return self.data.x_train[index], self.data.y_train[index]

    # -- stepping

    def step(self) -> None:
        """One optimizer step on one minibatch; its loss lands in the history on the next flush."""
        self.model.train()
        x, y = self._batch()
        if self.config.adversarial:
            x = self._worst_case(x, y)
        loss = self.loss_fn(self.model(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step_count += 1
        self._pending.append(loss.detach())
        if len(self._pending) >= FLUSH_EVERY:
            self.flush()

    def _worst_case(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The batch moved by PGD to where the model's cross-entropy is highest within the
        eps-box (and the data's range): training on it is adversarial training.

        The random start is seeded by the batch seed and the step, so runs repeat.
        """
        c = self.config
        alpha = c.adversarial_step_size or 2.5 * c.adversarial_eps / c.adversarial_steps
        return pgd_attack(self.model, x, y, c.adversarial_eps, alpha, c.adversarial_steps,
                          self.data.bounds, random_start=True,
                          seed=c.seed * 1_000_003 + self.step_count)

    def flush(self) -> None:
        """Move the pending per-step losses to the history and look for divergence."""
        if not self._pending:
            return
        values = (torch.stack(self._pending) * self.loss_unit).tolist()  # the unit once per flush, not per step
        first = self.step_count - len(values) + 1
        self._pending = []
        for i, value in enumerate(values):
            self.history.step.append(first + i)
            self.history.train_loss.append(value)
            if self.diverged_at is None and not math.isfinite(value):
                self.diverged_at = first + i

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Loss and accuracy on the fixed train and test subsets; appended to the history."""
        result = {}
        with evaluating(self.model):
            for split, (x, y) in (("train", self._eval_train), ("test", self._eval_test)):
                output = self.model(x)
                result[f"{split}_loss"] = self.loss_fn(output, y).item() * self.loss_unit
                result[f"{split}_accuracy"] = accuracy(output, y, self.data.task)
        h = self.history
        h.eval_step.append(self.step_count)
        h.eval_train_loss.append(result["train_loss"])
        h.eval_train_accuracy.append(result["train_accuracy"])
        h.test_loss.append(result["test_loss"])
        h.test_accuracy.append(result["test_accuracy"])
        if self.diverged_at is None and not math.isfinite(result["train_loss"]):
            self.diverged_at = self.step_count
        return result

    def checkpoint(self) -> dict[str, torch.Tensor]:
        """A CPU copy of the weights now (kept in `self.checkpoints` if asked)."""
        state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        if self.keep_checkpoints:
            self.checkpoints[self.step_count] = state
        return state

    # -- running

    def run(self, steps: Optional[int] = None, *, should_stop: Callable[[], bool] = lambda: False,
            on_eval: Optional[Callable[["Trainer"], None]] = None,
            on_checkpoint: Optional[Callable[[int, dict], None]] = None,
            on_step: Optional[Callable[["Trainer"], None]] = None) -> Outcome:
        """Train until `config.steps` (or `steps` more), a stop request, or divergence.

        Args:
            steps: how many steps to take now; by default up to `config.steps` in all.
            should_stop: polled every step; True ends the run as "stopped".
            on_eval: called after every evaluation (for live views).
            on_checkpoint: called with (step, weights) at every checkpoint.
            on_step: called after every optimizer step (for probes that act per step).
        """
        end = self.step_count + steps if steps is not None else self.config.steps
        cfg = self.config
        if self.step_count == 0:
            self._record(on_eval, on_checkpoint, evaluate=True, save=True)
        while self.step_count < end:
            if should_stop():
                self.flush()
                self._record(on_eval, on_checkpoint, evaluate=True, save=True)
                return Outcome("stopped", self.step_count, f"Stopped at step {self.step_count}.")
            self.step()
            if on_step is not None:
                on_step(self)
            last = self.step_count == end
            evaluate = last or self.step_count % cfg.eval_every == 0
            save = last or self.step_count % cfg.checkpoint_every == 0
            if evaluate or save:
                self.flush()
                self._record(on_eval, on_checkpoint, evaluate=evaluate, save=save)
            if self.diverged_at is not None:
                return self._diverged()
        self.flush()
        if self.diverged_at is not None:
            return self._diverged()
        return Outcome("done", self.step_count, f"Finished {self.step_count} steps.")

    def _record(self, on_eval, on_checkpoint, *, evaluate: bool, save: bool) -> None:
        if evaluate:
            self.evaluate()
            if on_eval is not None:
                on_eval(self)
        if save and self.diverged_at is None:
            state = self.checkpoint()
            if on_checkpoint is not None:
                on_checkpoint(self.step_count, state)

    def _diverged(self) -> Outcome:
        self.flush()
        return Outcome(
            "diverged", self.diverged_at,
            f"The loss became NaN or infinite at step {self.diverged_at}: training diverged. "
            "Try a smaller learning rate or init scale.",
        )
