"""Many networks of one architecture trained at once, as one vmap'd computation.

Members share their shapes (a width of a phase diagram: several output scales alpha and
seeds), so their parameters are stacked along a new first dimension and one forward pass
evaluates them all with `torch.func.functional_call` under `torch.func.vmap`. The loss is
the sum of the members' own losses, so each member's gradient is exactly its own; Adam and
SGD act elementwise, so one optimizer over the stacked tensors (with the same per-layer
learning rates as `engine.train.make_optimizer`) updates every member as if it were trained
alone. Every member sees the same minibatches, in the same order as `engine.train.Trainer`
with the same `TrainConfig`.

    ensemble = EnsembleTrainer([build(spec_a), build(spec_b), ...], data, config)
    ensemble.run()
    ensemble.member_state(0)          # member 0's state dict, like a lone model's
"""
from __future__ import annotations

import copy
import math
from typing import Callable, Optional, Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from engine.data import Dataset
from engine.device import pick
from engine.models import Centered, lr_multipliers
from engine.results import History
from engine.train import FLUSH_EVERY, Minibatches, Outcome, TrainConfig, accuracy, evaluation_subset, make_loss, make_optimizer

__all__ = ["EnsembleTrainer"]


def _unwrap(models: Sequence[nn.Module]):
    """The networks inside the members, their output scales (None if not centred) and w0."""
    centred = [isinstance(m, Centered) for m in models]
    if any(centred) and not all(centred):
        raise ValueError("An ensemble's members must all be Centered models, or none of them.")
    if not all(centred):
        return list(models), None, None
    initial = [m.initial_parameters() for m in models]
    return [m.model for m in models], [m.alpha for m in models], initial


def _check_same_architecture(networks: Sequence[nn.Module], optimizer: str, base_width: int) -> None:
    def shapes(net):
        return [(n, tuple(t.shape), t.dtype) for n, t in net.state_dict().items()]

    first = shapes(networks[0])
    rates = lr_multipliers(networks[0], optimizer, base_width)
    for net in networks[1:]:
        if shapes(net) != first or type(net) is not type(networks[0]):
            raise ValueError("The members of an ensemble must have the same architecture "
                             "(the same parameter names and shapes); train other widths separately.")
        if lr_multipliers(net, optimizer, base_width) != rates:
            raise ValueError("The members of an ensemble must share their per-layer learning rates "
                             "(the same parametrization).")


def _stacked_module(network: nn.Module, params: dict, buffers: dict) -> nn.Module:
    """A copy of `network` whose parameters and buffers are the stacked tensors.

    The copy keeps every layer's attributes (a `Dense` layer's role and parametrization), so
    `engine.train.make_optimizer` gives the stacked tensors the same per-layer learning rates
    it gives a lone network. It is never called: the forward pass is the vmap'd one.
    """
    stacked = copy.deepcopy(network)
    for name, tensor in params.items():
        owner, leaf = _owner(stacked, name)
        setattr(owner, leaf, nn.Parameter(tensor))
    for name, tensor in buffers.items():
        owner, leaf = _owner(stacked, name)
        owner.register_buffer(leaf, tensor)
    return stacked


def _owner(module: nn.Module, name: str) -> tuple[nn.Module, str]:
    prefix, _, leaf = name.rpartition(".")
    return module.get_submodule(prefix), leaf


class EnsembleTrainer:
    """Trains M members of one architecture together, each exactly as `Trainer` would alone.

    Members are either all `Centered` models (the output alpha_m * (f(x; w_m) - f(x; w0_m))
    with each member's own alpha and w0, and the loss divided by alpha_m^2) or all plain
    networks.

    Args:
        models: the members, freshly built (their weights are copied, never changed).
        data: the dataset; moved to the device once.
        config: the training settings shared by all members (validated; ValueError).
        device: where to train; `engine.device.pick()` by default.
        base_width: muP's base width (see `engine.models.lr_multipliers`).
        checkpoint_members: the members whose weights are kept at every checkpoint in
            `self.checkpoints[m][step]` (keeping all would cost memory for nothing).

    Attributes:
        histories: one `History` per member, as `Trainer` records it (the plain loss of the
            member's output, not divided by alpha^2, so members with different alphas compare).
        diverged_at: per member, the step its loss became NaN or infinite, else None.
    """

    def __init__(self, models: Sequence[nn.Module], data: Dataset, config: TrainConfig, *,
                 device: torch.device | str | None = None, base_width: int = 64,
                 checkpoint_members: Sequence[int] = ()):
        errors = config.errors()
        if errors:
            raise ValueError(" ".join(errors.values()))
        if not models:
            raise ValueError("An ensemble needs at least one member.")
        if config.adversarial:
            raise ValueError("The ensemble does not train adversarially; set adversarial eps to 0 "
                             "or train the networks one by one.")
        self.config = config
        self.device = torch.device(device) if device is not None else pick()
        self.data = data.to(self.device)
        self.templates = [copy.deepcopy(m).cpu() for m in models]  # for member_state
        networks, alphas, initial = _unwrap(models)
        _check_same_architecture(networks, config.optimizer, base_width)
        self.size = len(models)
        params, buffers = stack_module_state([copy.deepcopy(n).to(self.device) for n in networks])
        self.stacked = _stacked_module(networks[0], {k: v.detach() for k, v in params.items()}, buffers)
        self.base = copy.deepcopy(networks[0]).to("meta")  # shapes only; weights come stacked
        self.centred = alphas is not None
        if self.centred:
            dtype = next(iter(params.values())).dtype
            self.alpha = torch.tensor(alphas, dtype=dtype, device=self.device)
            self.initial = {n: torch.stack([w0[n] for w0 in initial]).to(self.device) for n in params}
        else:
            self.alpha = None
            self.initial = {n: p.detach().clone() for n, p in self.stacked.named_parameters()}
        self._loss = make_loss(config.loss, data.task, data.n_classes)  # each member's, unscaled
        self._scale = (1.0 / self.alpha**2) if self.centred else None
        self.optimizer = make_optimizer(self.stacked, config, base_width)
        self._batches = Minibatches(len(self.data.x_train), config, self.device)
        self._eval = {"train": evaluation_subset(len(self.data.x_train), config, self.device),
                      "test": evaluation_subset(len(self.data.x_test), config, self.device)}
        self._f0 = self._initial_outputs()
        self.histories = [History() for _ in range(self.size)]
        self.diverged_at: list[Optional[int]] = [None] * self.size
        self.checkpoint_members = list(checkpoint_members)
        self.checkpoints: dict[int, dict[int, dict[str, torch.Tensor]]] = {m: {} for m in self.checkpoint_members}
        self.step_count = 0
        self._pending: list[torch.Tensor] = []

    # -- the members' functions

    def _networks(self, params: dict, x: torch.Tensor) -> torch.Tensor:
        """f(x; w_m) for every member: (M, N, outputs)."""
        buffers = dict(self.stacked.named_buffers())

        def one(p, b):
            return functional_call(self.base, (p, b), (x,))

        return vmap(one)(params, buffers)

    @torch.no_grad()
    def _initial_outputs(self) -> Optional[dict[str, torch.Tensor]]:
        """f(x; w0_m) on the whole training set and on the test split, computed once (a
        centred member subtracts it; w0 never changes)."""
        if not self.centred:
            return None
        return {"train": self._networks(self.initial, self.data.x_train),
                "test": self._networks(self.initial, self.data.x_test)}

    def outputs(self, x: torch.Tensor, f0: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The members' outputs on x, (M, N, outputs): alpha_m * (f(x; w_m) - f(x; w0_m)) for
        centred members (f0, the initial outputs on x, is computed when not given)."""
        f = self._networks(dict(self.stacked.named_parameters()), x)
        if not self.centred:
            return f
        if f0 is None:
            with torch.no_grad():
                f0 = self._networks(self.initial, x)
        return self.alpha.view(-1, *[1] * (f.ndim - 1)) * (f - f0)

    def member_losses(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Each member's plain loss of its outputs (M, N, outputs) against the targets: (M,)."""
        return vmap(self._loss, in_dims=(0, None))(output, target)

    def objective(self, losses: torch.Tensor) -> torch.Tensor:
        """The sum of the members' training losses (a centred member's divided by its
        alpha^2, as `engine.train.make_loss` does): each member's gradient is its own."""
        return (losses * self._scale).sum() if self.centred else losses.sum()

    # -- stepping

    def step(self) -> None:
        """One optimizer step of every member on the same minibatch."""
        index = self._batches.next()
        x, y = self.data.x_train, self.data.y_train
        f0 = self._f0["train"] if self.centred else None
        if index is not None:
            x, y = x[index], y[index]
            f0 = f0[:, index] if f0 is not None else None
        losses = self.member_losses(self.outputs(x, f0), y)
        self.optimizer.zero_grad(set_to_none=True)
        self.objective(losses).backward()  # members share nothing: each gets its own gradient
        self.optimizer.step()
        self.step_count += 1
        self._pending.append(losses.detach())
        if len(self._pending) >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        """Move the pending per-step losses into the histories and look for divergence."""
        if not self._pending:
            return
        rows = torch.stack(self._pending).tolist()  # (steps, M)
        first = self.step_count - len(rows) + 1
        self._pending = []
        for i, row in enumerate(rows):
            for m, value in enumerate(row):
                self.histories[m].step.append(first + i)
                self.histories[m].train_loss.append(value)
                if self.diverged_at[m] is None and not math.isfinite(value):
                    self.diverged_at[m] = first + i

    def _split(self, split: str):
        index = self._eval[split]
        x = self.data.x_train if split == "train" else self.data.x_test
        y = self.data.y_train if split == "train" else self.data.y_test
        f0 = self._f0[split][:, index] if self.centred else None
        return x[index], y[index], f0

    @torch.no_grad()
    def evaluate(self) -> dict[str, list[float]]:
        """Each member's loss and accuracy on `Trainer`'s fixed train and test subsets,
        appended to the histories; lists of M values keyed like `Trainer.evaluate`."""
        result = {}
        for split in ("train", "test"):
            x, y, f0 = self._split(split)
            output = self.outputs(x, f0)
            result[f"{split}_loss"] = self.member_losses(output, y).tolist()
            result[f"{split}_accuracy"] = [accuracy(o, y, self.data.task) for o in output]
        for m, h in enumerate(self.histories):
            h.eval_step.append(self.step_count)
            h.eval_train_loss.append(result["train_loss"][m])
            h.eval_train_accuracy.append(result["train_accuracy"][m])
            h.test_loss.append(result["test_loss"][m])
            h.test_accuracy.append(result["test_accuracy"][m])
            if self.diverged_at[m] is None and not math.isfinite(result["train_loss"][m]):
                self.diverged_at[m] = self.step_count
        return result

    @torch.no_grad()
    def output_losses(self, split: str) -> torch.Tensor:
        """Each member's plain loss of its outputs (not divided by alpha^2, so members with
        different alphas compare) on the fixed subset of `split`: (M,)."""
        x, y, f0 = self._split(split)
        return self.member_losses(self.outputs(x, f0), y)

    @torch.no_grad()
    def output_accuracy(self, split: str) -> list[float]:
        x, y, f0 = self._split(split)
        return [accuracy(o, y, self.data.task) for o in self.outputs(x, f0)]

    # -- one member

    def parameters_of(self, m: int, initial: bool = False) -> dict[str, torch.Tensor]:
        """Member m's network weights (w_m, or w0_m), keyed like the network's parameters."""
        source = self.initial if initial else dict(self.stacked.named_parameters())
        return {n: t[m].detach() for n, t in source.items()}

    def network(self, m: int, initial: bool = False) -> nn.Module:
        """A copy of member m's network (inside `Centered`) with its current or initial weights."""
        template = self.templates[m].model if self.centred else self.templates[m]
        net = copy.deepcopy(template).to(self.device)
        with torch.no_grad():
            for name, p in net.named_parameters():
                p.copy_(self.parameters_of(m, initial)[name])
        return net

    def member_state(self, m: int) -> dict[str, torch.Tensor]:
        """Member m's state dict now, on the CPU, keyed exactly like the model it was built as
        (so `model.load_state_dict` of a freshly built model takes it)."""
        prefix = "model." if self.centred else ""
        state = {k: v.clone() for k, v in self.templates[m].state_dict().items()}
        for name, value in self.parameters_of(m).items():
            state[prefix + name] = value.to("cpu", copy=True)
        return state

    # -- running

    def run(self, steps: Optional[int] = None, *, should_stop: Callable[[], bool] = lambda: False,
            on_checkpoint: Optional[Callable[[int], None]] = None) -> Outcome:
        """Train until `config.steps` (or `steps` more), a stop request, or until every member
        has diverged; a member that diverges alone leaves the others training.

        Args:
            steps: how many steps to take now; by default up to `config.steps` in all.
            should_stop: polled every step; True ends the run as "stopped" (it may also raise,
                e.g. a job's `Cancelled`, which propagates).
            on_checkpoint: called with the step after every checkpoint.
        """
        end = self.step_count + steps if steps is not None else self.config.steps
        cfg = self.config
        if self.step_count == 0:
            self._record(on_checkpoint, evaluate=True, save=True)
        while self.step_count < end:
            if should_stop():
                self.flush()
                self._record(on_checkpoint, evaluate=True, save=True)
                return Outcome("stopped", self.step_count, f"Stopped at step {self.step_count}.")
            self.step()
            last = self.step_count == end
            evaluate = last or self.step_count % cfg.eval_every == 0
            save = last or self.step_count % cfg.checkpoint_every == 0
            if evaluate or save:
                self.flush()
                self._record(on_checkpoint, evaluate=evaluate, save=save)
            if all(d is not None for d in self.diverged_at):
                return Outcome("diverged", self.step_count, "Every member of the ensemble diverged.")
        self.flush()
        return Outcome("done", self.step_count, f"Finished {self.step_count} steps.")

    def _record(self, on_checkpoint, *, evaluate: bool, save: bool) -> None:
        if evaluate:
            self.evaluate()
        if save:
            for m in self.checkpoint_members:
                if self.diverged_at[m] is None:
                    self.checkpoints[m][self.step_count] = self.member_state(m)
            if on_checkpoint is not None:
                on_checkpoint(self.step_count)
