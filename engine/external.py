"""Your own model: a network, its checkpoints and its data, imported as a run of the lab.

    python -m engine import --model resnet.py:make_resnet --model-args '{"width": 16}' \\
        --weights checkpoints/ --data digits.npz --name "my resnet"

or, in a notebook, `engine.import_run("resnet.py:make_resnet", "checkpoints/", data="digits.npz")`.

- The model comes from a factory: a callable in a Python file (`FILE.py:FACTORY`) or in an
  importable module (`package.module:FACTORY`) that returns an `nn.Module`, called with the
  keyword arguments of `model_args`. The run records the factory (the file's absolute path)
  and its arguments, and `load_model` rebuilds the model through it: the file is imported
  again, which is safe because the user named it on their own command line. Model code
  uploaded through a browser is never imported, and neither is a factory that only a run's
  settings name (a run zip uploaded from elsewhere could name any module): `load_model`
  imports only the factories this machine's user named (`trusted_factories`).
- The weights are one `.safetensors` state dict, a folder of `step-<N>.safetensors` files (a
  trajectory: the run's checkpoints in step order), or a PyTorch `.pt`/`.pth` file read with
  `torch.load(weights_only=True)`; anything that needs pickle beyond that is refused.
- The data is an `.npz` (`x_train, y_train, x_test, y_test`, or `x, y`), a `.csv` (the last
  column is the target), a folder of images in one sub-folder per class, or a built-in
  dataset's name. Inputs keep their shape, e.g. (N, C, H, W):
  the lab stores them flat with their natural shape, and an imported model that wants the
  natural shape gets it back from a pre-forward hook (`Unflatten`), the way the lab's own CNN
  reshapes its flat inputs.

Everything is checked before anything is written: a wrong factory, weights that do not fit
the model (which keys, which shapes), data the model rejects (one batch is run first), and a
task that does not match the model's outputs each raise a ValueError with a sentence, and the
store is left as it was.
"""
from __future__ import annotations

import csv
import hashlib
import importlib
import importlib.util
import io
import json
import math
import os
import pickle
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import safetensors.torch
import torch
from torch import nn

from engine import data as datasets
from engine.modes import evaluating

__all__ = ["import_run", "import_uploaded", "check_import", "save_import", "offered_factories", "trusted_factories",
           "load_factory", "load_model", "load_dataset", "is_imported", "build_model", "read_weights", "read_data",
           "Unflatten", "SETTINGS_KEY", "MODELS_VAR", "DATASET_ARTIFACT", "UPLOADED"]

SETTINGS_KEY = "imported_model"  # in a run's settings: how to rebuild the model
TRUSTED_FILE = ".trusted-factories.json"  # in the store's root, where no uploaded run can write
MODELS_VAR = "DYNAMICS_LAB_MODELS"  # FILE.py:fn,... : factories named when the server started
DATASET_ARTIFACT = "dataset"  # the run's data, as arrays with their natural shapes
UPLOADED = "uploaded: "  # a run's recorded weights or data that came through a browser
TEST_FRACTION = 0.2  # of data given as x, y only
PROBE_SAMPLES = 8  # the batch run through the model before anything is written
EVAL_BATCH = 512
SHOWN_KEYS = 5  # keys named in a sentence about weights that do not fit
CONVERT_HINT = ("Convert it once in your own Python, where your model's classes are importable: "
                "`import safetensors.torch; safetensors.torch.save_file(model.state_dict(), "
                "'weights.safetensors')`, and import the .safetensors file.")
_STEP_FILE = re.compile(r"^step-(\d+)\.safetensors$")


def is_imported(settings: dict) -> bool:
    """Whether a run's settings describe an imported model (rather than one the lab built)."""
    return SETTINGS_KEY in settings


# ---------------------------------------------------------------- the model's factory


def load_factory(spec: str) -> Callable:
    """The callable that `spec` names: "FILE.py:FACTORY" or "package.module:FACTORY"."""
    target, _, attribute = str(spec).rpartition(":")
    if not target or not attribute.isidentifier():
        raise ValueError(f"The model is given as FILE.py:FACTORY or package.module:FACTORY, not '{spec}'.")
    if target.endswith(".py") or "/" in target or "\\" in target:
        module = _module_from_file(Path(target).expanduser())
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise ValueError(f"The module '{target}' cannot be imported: {exc}.") from None
        except Exception as exc:
            raise ValueError(f"Importing the module '{target}' failed: {type(exc).__name__}: {exc}.") from None
    factory = getattr(module, attribute, None)
    if factory is None:
        defined = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                         and getattr(v, "__module__", None) == module.__name__)
        raise ValueError(f"'{target}' defines no '{attribute}'"
                         + (f"; it defines: {', '.join(defined)}." if defined else "."))
    if not callable(factory):
        raise ValueError(f"'{attribute}' in '{target}' is a {type(factory).__name__}, not a function "
                         f"or class that builds a model.")
    return factory


_modules: dict[tuple[str, int], object] = {}  # (file, modification time) -> its module


def _module_from_file(path: Path):
    """Import a Python file as a module of its own (again only when the file has changed).

    Its folder is on sys.path while it runs, so it can import the files beside it.
    """
    if not path.is_file():
        raise ValueError(f"There is no Python file at {path}.")
    path = path.resolve()
    key = (str(path), path.stat().st_mtime_ns)
    if key in _modules:
        return _modules[key]
    name = "dynamics_lab_model_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # classes defined there can find their module (copy, dataclasses)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise ValueError(f"Running {path.name} failed: {type(exc).__name__}: {exc}.") from None
    finally:
        sys.path.remove(str(path.parent))
    _modules[key] = module
    return module


def trusted_factories(store) -> set[str]:
    """The factories this machine's user named, as runs record them: those imported into this
    store from the command line or a notebook, and those listed in $DYNAMICS_LAB_MODELS."""
    listed = {_recorded_spec(s.strip()) for s in os.environ.get(MODELS_VAR, "").split(",") if s.strip()}
    return _imported_factories(store) | listed


def _imported_factories(store) -> set[str]:
    try:
        names = json.loads((Path(store.root) / TRUSTED_FILE).read_text())
    except (OSError, ValueError):
        return set()
    return {n for n in names if isinstance(n, str)} if isinstance(names, list) else set()


def _trust(store, spec: str) -> None:
    """Remember that the user named `spec` (written beside, then renamed: readers see a whole file)."""
    names = _imported_factories(store)
    if spec in names:
        return
    path = Path(store.root) / TRUSTED_FILE
    staged = path.with_name(f"{TRUSTED_FILE}.{os.getpid()}.tmp")
    staged.write_text(json.dumps(sorted(names | {spec}), indent=1))
    os.replace(staged, path)


def model_args_dict(model_args: Union[str, dict, None]) -> dict:
    """The factory's keyword arguments from a JSON object's text (or a dict, or None)."""
    if model_args is None or model_args == "":
        return {}
    if isinstance(model_args, str):
        try:
            model_args = json.loads(model_args)
        except json.JSONDecodeError as exc:
            raise ValueError(f"The model arguments are not valid JSON ({exc.msg}); give an object "
                             f"such as '{{\"width\": 16}}'.") from None
    if not isinstance(model_args, dict):
        raise ValueError("The model arguments must be a JSON object of keyword arguments, such as "
                         "'{\"width\": 16}'.")
    return model_args


def build_model(spec: str, model_args: Union[str, dict, None] = None) -> nn.Module:
    """A fresh model from its factory: `load_factory(spec)(**model_args)`, checked to be a Module."""
    factory, kwargs = load_factory(spec), model_args_dict(model_args)
    name = spec.rpartition(":")[2]
    try:
        model = factory(**kwargs)
    except Exception as exc:
        raise ValueError(f"Calling {name}(**{json.dumps(kwargs)}) failed: {type(exc).__name__}: {exc}.") from None
    if not isinstance(model, nn.Module):
        raise ValueError(f"{name} returned a {type(model).__name__}, not a torch.nn.Module.")
    if not any(True for _ in model.parameters()):
        raise ValueError(f"The model {name} builds has no parameters; there is nothing to look at.")
    return model


def _recorded_spec(spec: str) -> str:
    """The factory as the run records it: a file by its absolute path, a module as given."""
    target, _, attribute = spec.rpartition(":")
    if target.endswith(".py") or "/" in target or "\\" in target:
        return f"{Path(target).expanduser().resolve()}:{attribute}"
    return spec


# ---------------------------------------------------------------- weights


def read_weights(path: Union[str, Path]) -> dict[int, dict[str, torch.Tensor]]:
    """The checkpoints in `path`, as {step: state dict}, in step order.

    A `.safetensors` file is one checkpoint (its step from a `step-<N>` name, else 0); a folder
    holds `step-<N>.safetensors` files; a `.pt`/`.pth` is read with `torch.load(weights_only=True)`.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        found = {}
        for file in sorted(path.iterdir()):
            match = _STEP_FILE.match(file.name)
            if match:
                step = int(match.group(1))
                if step in found:
                    raise ValueError(f"The folder {path} has two checkpoints for step {step}.")
                found[step] = _read_safetensors(file)
        if not found:
            raise ValueError(f"The folder {path} has no checkpoints named step-<N>.safetensors "
                             f"(such as step-100.safetensors).")
        return dict(sorted(found.items()))
    if not path.is_file():
        raise ValueError(f"There are no weights at {path}.")
    match = _STEP_FILE.match(path.name)
    step = int(match.group(1)) if match else 0
    if path.suffix == ".safetensors":
        return {step: _read_safetensors(path)}
    if path.suffix in (".pt", ".pth"):
        return {step: _read_torch(path)}
    raise ValueError(f"{path.name} is not a weights file the lab reads: give a .safetensors state "
                     f"dict, a folder of step-<N>.safetensors files, or a .pt/.pth state dict.")


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return safetensors.torch.load_file(str(path))
    except Exception as exc:
        raise ValueError(f"{path.name} cannot be read as a .safetensors file: {exc}.") from None


def _read_torch(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a .pt/.pth file, with nothing unpickled beyond tensors and containers."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, EOFError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path.name} cannot be read without unpickling Python objects, which the lab "
                         f"refuses ({reason}). {CONVERT_HINT}") from None
    if isinstance(loaded, dict) and not _is_state_dict(loaded):
        nested = [v for k, v in loaded.items() if k in ("state_dict", "model_state_dict", "model")
                  and isinstance(v, dict) and _is_state_dict(v)]
        loaded = nested[0] if len(nested) == 1 else loaded
    if not isinstance(loaded, dict) or not _is_state_dict(loaded):
        raise ValueError(f"{path.name} does not hold a state dict (names mapped to tensors). {CONVERT_HINT}")
    return dict(loaded)


def _is_state_dict(d: dict) -> bool:
    return bool(d) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in d.items())


def fit_weights(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """`state` loaded into `model`, returned as the model's own state dict (its dtypes), or a
    ValueError that names the missing and unexpected keys and the shapes that differ."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [f"{k} is {tuple(expected[k].shape)} in the model but {tuple(state[k].shape)} in the file"
                for k in expected if k in state and expected[k].shape != state[k].shape]
    if missing or unexpected or reshaped:
        problems = []
        if missing:
            problems.append(f"missing keys {_some(missing)}")
        if unexpected:
            problems.append(f"unexpected keys {_some(unexpected)}")
        if reshaped:
            problems.append(f"shapes differ: {_some(reshaped, '; ')}")
        hint = ""
        if unexpected and all(k.startswith("module.") for k in unexpected):
            hint = (" The file's keys start with 'module.' (a DataParallel model): save "
                    "model.module.state_dict() instead.")
        raise ValueError(f"The weights in {where} do not fit the model: {'; '.join(problems)}.{hint}")
    model.load_state_dict(state)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _some(items: list[str], separator: str = ", ") -> str:
    shown = separator.join(items[:SHOWN_KEYS])
    return shown + (f" (and {len(items) - SHOWN_KEYS} more)" if len(items) > SHOWN_KEYS else "")


# ---------------------------------------------------------------- data


@dataclass
class Arrays:
    """A user's data as numpy arrays: inputs in their natural shape (N, ...), raw targets."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def read_data(source: str) -> Arrays:
    """The data in `source`: an .npz or .csv file, a folder of images (one sub-folder per
    class, see `_image_folder_arrays`), or the name of a built-in dataset."""
    path = Path(source).expanduser()
    if path.is_dir():
        return _image_folder_arrays(path)
    if path.suffix == ".npz":
        return _npz_arrays(path)
    if path.suffix == ".csv":
        return _csv_arrays(path)
    if str(source) in datasets.names():
        d = datasets.load(str(source))
        natural = (-1, *d.input_shape)
        return Arrays(d.name, d.x_train.numpy().reshape(natural), d.y_train.numpy(),
                      d.x_test.numpy().reshape(natural), d.y_test.numpy())
    if path.exists():
        raise ValueError(f"{path.name} is neither an .npz nor a .csv file.")
    raise ValueError(f"There is no data at {source}, and it is not a built-in dataset "
                     f"({', '.join(datasets.names())}).")


def _npz_arrays(path: Path) -> Arrays:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        raise ValueError(f"{path.name} cannot be read as a NumPy .npz archive; save it with numpy.savez.") from None
    with archive:
        keys = set(archive.files)
        try:
            arrays = {k: archive[k] for k in keys}
        except ValueError:
            raise ValueError(f"{path.name} holds Python objects; only plain numeric arrays are read.") from None
    if keys == {"x_train", "y_train", "x_test", "y_test"}:
        return Arrays(path.stem, *(_numbers(arrays[k], k) for k in ("x_train", "y_train", "x_test", "y_test")))
    if keys == {"x", "y"}:
        return _split(path.stem, _numbers(arrays["x"], "x"), _numbers(arrays["y"], "y"))
    raise ValueError(f"{path.name} has the arrays {', '.join(sorted(keys)) or 'none'}; it needs either "
                     f"x_train, y_train, x_test and y_test, or x and y.")


def _csv_arrays(path: Path) -> Arrays:
    """A CSV of numbers: every column but the last is an input feature, the last the target."""
    try:
        rows = [r for r in csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"))) if r]
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path.name} cannot be read as a text CSV file ({exc}).") from None
    try:
        float(rows[0][0])
    except (ValueError, IndexError):
        rows = rows[1:]  # a header row of names
    try:
        table = np.array(rows, dtype=float)
    except ValueError:
        raise ValueError(f"{path.name} must hold only numbers, one row per sample with the same number "
                         f"of columns (after an optional header row).") from None
    if table.ndim != 2 or table.shape[1] < 2:
        raise ValueError(f"{path.name} needs at least one input column and a target column (the last).")
    return _split(path.stem, _numbers(table[:, :-1], "inputs"), _numbers(table[:, -1], "targets"))


def _image_folder_arrays(folder: Path) -> Arrays:
    """Images in one sub-folder per class, the class names sorted giving the labels 0, 1, ...

    Pixels become floats in [0, 1], shaped (N, C, H, W): C = 1 when every image is grayscale,
    else 3 (RGB). A folder with `train/` and `test/` sub-folders (each one sub-folder per class)
    keeps that split; otherwise a seeded split holds out TEST_FRACTION, as for `x, y` arrays.
    Hidden files (names starting with ".") are skipped; anything else that is not an image, a
    symlink leading out of the folder, or images of different sizes is refused with a sentence.
    """
    root = folder.resolve()
    parts = {p.name: p for p in _entries(folder, root)}
    if set(parts) == {"train", "test"} and all(p.is_dir() for p in parts.values()):
        classes = [c.name for c in _class_folders(parts["train"], root)]
        train, y_train = _read_classes(parts["train"], root, classes)
        test, y_test = _read_classes(parts["test"], root, classes)
        x_train, x_test = np.split(_pixel_arrays(train + test), [len(train)])
        return Arrays(root.name, x_train, y_train, x_test, y_test)
    classes = [c.name for c in _class_folders(folder, root)]
    images, labels = _read_classes(folder, root, classes)
    return _split(root.name, _pixel_arrays(images), labels)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
GRAY_MODES = ("1", "L", "LA", "I;16", "I;16L", "I;16B")  # Pillow's one-channel modes (LA: with alpha)


def _entries(folder: Path, root: Path) -> list[Path]:
    """The visible entries of `folder`, sorted by name; a symlink must stay inside `root`."""
    entries = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.startswith("."):
            continue
        if entry.is_symlink() and not entry.resolve().is_relative_to(root):
            raise ValueError(f"{entry} is a link that leads out of the data folder {root}; the lab reads "
                             f"only what is inside it. Copy the file in instead.")
        entries.append(entry)
    return entries


def _class_folders(folder: Path, root: Path) -> list[Path]:
    """The class sub-folders of `folder`; a file beside them is refused."""
    entries = _entries(folder, root)
    files = [e.name for e in entries if not e.is_dir()]
    if files or not entries:
        raise ValueError(f"The image folder {folder} must hold one sub-folder per class (their sorted names "
                         f"give the labels) and nothing else"
                         + (f"; it also holds {_some(files)}." if files else "; it holds none."))
    return entries


def _read_classes(folder: Path, root: Path, classes: list[str]) -> tuple[list, np.ndarray]:
    """The images of each class sub-folder of `folder` (Pillow images, loaded) and their labels."""
    images, labels = [], []
    for entry in _class_folders(folder, root):
        if entry.name not in classes:
            raise ValueError(f"{entry} is a class that train/ does not have ({', '.join(classes)}).")
        found = [_read_image(f) for f in _entries(entry, root)]
        if not found:
            raise ValueError(f"The class folder {entry} holds no images.")
        images += found
        labels += [classes.index(entry.name)] * len(found)
    return images, np.array(labels, dtype=np.int64)


def _read_image(path: Path):
    """One image file, read whole by Pillow (a sentence for anything that is not an image)."""
    from PIL import Image, UnidentifiedImageError

    if path.is_dir() or path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"{path} is not an image ({', '.join(IMAGE_SUFFIXES)}); a class folder holds "
                         f"only images.")
    try:
        with Image.open(path) as image:
            image.load()
            return image
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ValueError(f"{path} cannot be read as an image ({exc}).") from None


def _pixel_arrays(images: list) -> np.ndarray:
    """(N, C, H, W) floats in [0, 1]: one channel when every image is grayscale, else RGB."""
    sizes = [image.size for image in images]
    common = max(set(sizes), key=sizes.count)
    odd = next((image for image in images if image.size != common), None)
    if odd is not None:
        raise ValueError(f"All images must share one size: most are {common[0]}x{common[1]} pixels, but "
                         f"{odd.filename} is {odd.size[0]}x{odd.size[1]}. Resize them to one size first.")
    colour = any(image.mode not in GRAY_MODES for image in images)
    return np.stack([_pixels(image, colour) for image in images])


def _pixels(image, colour: bool) -> np.ndarray:
    """One image as (C, H, W) floats in [0, 1] (16-bit grayscale scaled by its own range)."""
    if colour:
        return np.asarray(image.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255
    if image.mode.startswith("I;16"):
        return np.asarray(image, dtype=np.float32)[None] / 65535
    return np.asarray(image.convert("L"), dtype=np.float32)[None] / 255


def _numbers(array: np.ndarray, what: str) -> np.ndarray:
    if array.dtype.kind not in "biuf" or array.ndim == 0 or array.size == 0:
        raise ValueError(f"The {what} must be a non-empty array of numbers.")
    if not np.isfinite(array).all():
        raise ValueError(f"The {what} contain missing or infinite values (NaN or inf); fill or remove them.")
    return array


def _split(name: str, x: np.ndarray, y: np.ndarray) -> Arrays:
    """A fixed, seeded split of (x, y) into train and test (TEST_FRACTION held out)."""
    if len(x) != len(y):
        raise ValueError(f"There are {len(x)} inputs but {len(y)} targets; there must be one per input.")
    if len(x) < 2:
        raise ValueError("The data needs at least two samples, one to train on and one to test on.")
    order = np.random.default_rng(0).permutation(len(x))
    n_test = min(max(round(len(x) * TEST_FRACTION), 1), len(x) - 1)
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    return Arrays(name, x[train], y[train], x[test], y[test])


# ---------------------------------------------------------------- inputs, outputs and task


class Unflatten:
    """A forward pre-hook that gives a model inputs in their natural shape.

    The lab keeps samples flat, (N, D), like `engine.data.Dataset`; a conv net wants (N, C, H, W).
    A flat input (one sample (D,) or a batch (B, D)) is reshaped to the natural shape; any
    other input passes unchanged, so the model also takes (N, C, H, W) directly.
    """

    def __init__(self, shape: tuple[int, ...]):
        self.shape = tuple(int(s) for s in shape)
        self.size = math.prod(self.shape)

    def __call__(self, module: nn.Module, args: tuple):
        x = args[0] if args else None
        if isinstance(x, torch.Tensor) and x.dim() in (1, 2) and x.shape[-1] == self.size:
            return (x.reshape(*x.shape[:-1], *self.shape), *args[1:])
        return None


def _run_batch(model: nn.Module, x: torch.Tensor):
    with torch.no_grad(), evaluating(model):
        return model(x)


def probe_inputs(model: nn.Module, x: np.ndarray) -> tuple[torch.Tensor, bool]:
    """Run one batch in the data's natural shape (flat when only that works).

    Returns:
        (the outputs, whether the model needs its inputs unflattened from the lab's (N, D)).
    """
    batch = torch.as_tensor(x[:PROBE_SAMPLES], dtype=torch.float32)
    try:
        return _run_batch(model, batch), batch.dim() > 2
    except Exception as exc:
        natural_error = exc
    if batch.dim() > 2:
        try:
            return _run_batch(model, batch.flatten(1)), False
        except Exception:
            pass
    raise ValueError(f"The model rejects the data: a batch of inputs shaped {tuple(batch.shape)} gave "
                     f"{type(natural_error).__name__}: {natural_error}.")


def decide_task(output, y: np.ndarray, task: Optional[str]) -> str:
    """The task the targets and the model's outputs agree on; a sentence when they do not.

    Without `task`: classification when the targets are one column of whole numbers that
    index the model's outputs (at least two), regression otherwise.
    """
    if not isinstance(output, torch.Tensor) or output.dim() != 2:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ValueError(f"The model's output for a batch is {shape}; the lab needs one row of outputs "
                         f"per sample, shaped (batch, outputs).")
    outputs = output.shape[1]
    labels = y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1)
    whole = labels and bool(np.all(y == np.round(y)))
    if task is None:
        task = "classification" if whole and outputs >= 2 and y.min() >= 0 and y.max() < outputs else "regression"
    if task == "classification":
        if not whole:
            raise ValueError("Classification needs one whole-number class label per sample; these "
                             "targets are not. Choose --task regression for quantities.")
        if outputs < 2 or y.min() < 0 or y.max() >= outputs:
            raise ValueError(f"The labels run from {int(y.min())} to {int(y.max())}, but the model has "
                             f"{outputs} output{'s' if outputs != 1 else ''}: a classifier needs one output "
                             f"per class, labels 0 to {max(outputs - 1, 0)}.")
        return task
    if task != "regression":
        raise ValueError(f"The task is 'classification' or 'regression', not '{task}'.")
    columns = 1 if y.ndim == 1 else y.shape[1]
    if y.ndim > 2 or columns != outputs:
        raise ValueError(f"The targets have {columns if y.ndim <= 2 else tuple(y.shape[1:])} value(s) per "
                         f"sample but the model gives {outputs} outputs; for regression they must match"
                         + (" (class labels? choose --task classification)." if whole else "."))
    return task


def make_dataset(arrays: Arrays, task: str, n_outputs: int) -> datasets.Dataset:
    """A lab Dataset of the arrays: flat inputs with their natural shape; labels kept as given
    (they index the model's outputs, so they are not renumbered), one class per output."""
    y_train, y_test = arrays.y_train, arrays.y_test
    if task == "classification":
        y_train, y_test = y_train.reshape(-1).astype(np.int64), y_test.reshape(-1).astype(np.int64)
    n_classes = n_outputs if task == "classification" else 0
    return datasets._make_dataset(arrays.name, arrays.x_train, y_train, arrays.x_test, y_test, task,
                                  n_classes, arrays.x_train.shape[1:], {"task": task})


# ---------------------------------------------------------------- the import


@dataclass
class Checked:
    """Everything an import will write, checked: the settings, checkpoints and data."""

    settings: dict
    checkpoints: dict[int, dict[str, torch.Tensor]]
    dataset: Optional[datasets.Dataset]
    arrays: Optional[Arrays]
    model: nn.Module


def check_import(model: str, weights: Union[str, Path], data: Optional[str] = None,
                 model_args: Union[str, dict, None] = None, task: Optional[str] = None) -> Checked:
    """Build the model, fit every checkpoint, run one batch of the data: all before writing."""
    if task not in (None, "classification", "regression"):
        raise ValueError(f"The task is 'classification' or 'regression', not '{task}'.")
    kwargs = model_args_dict(model_args)
    net = build_model(model, kwargs)
    checkpoints = {step: fit_weights(net, state, f"{Path(weights).name} (step {step})")
                   for step, state in read_weights(weights).items()}
    record = {"factory": _recorded_spec(model), "args": kwargs, "weights": str(Path(weights).expanduser().resolve()),
              "unflatten": False}
    settings = {"data": "", "dataset": "", "input_shape": [], "n_outputs": 0, SETTINGS_KEY: record}
    dataset = arrays = None
    if data is not None:
        arrays = read_data(data)
        if arrays.x_train.shape[1:] != arrays.x_test.shape[1:] or len(arrays.x_train) != len(arrays.y_train) \
                or len(arrays.x_test) != len(arrays.y_test):
            raise ValueError("The training and test data differ in sample shape, or inputs and targets "
                             "differ in number.")
        output, record["unflatten"] = probe_inputs(net, arrays.x_train)
        task = decide_task(output, np.concatenate([arrays.y_train, arrays.y_test]), task)
        dataset = make_dataset(arrays, task, output.shape[1])
        source = str(data) if str(data) in datasets.names() else str(Path(data).expanduser().resolve())
        settings.update(data=source, dataset=arrays.name, input_shape=list(dataset.input_shape),
                        n_outputs=dataset.n_outputs, task=task)
    return Checked(settings, checkpoints, dataset, arrays, net)


def import_run(model: str, weights: Union[str, Path], data: Optional[str] = None, *,
               model_args: Union[str, dict, None] = None, task: Optional[str] = None,
               name: str = "", store=None) -> str:
    """Import your own model, its checkpoints and its data as a run; return the run's id.

    The run then opens everywhere a trained run does: `python -m engine list`, the Runs page,
    every lens (`engine.recipes`, `python -m engine landscape RUN_ID`, ...).

    Args:
        model: the factory, "FILE.py:FACTORY" or "package.module:FACTORY": a callable that
            returns an `nn.Module`. The run keeps its path and imports it again to rebuild
            the model.
        weights: a `.safetensors` state dict, a folder of `step-<N>.safetensors` files (the
            checkpoints of a trajectory), or a `.pt`/`.pth` state dict.
        data: an `.npz` (x_train, y_train, x_test, y_test, or x, y), a `.csv` (last column the
            target), a folder of images (one sub-folder per class, or train/ and test/ each
            so) or a built-in dataset's name. Inputs keep their shape, e.g. (N, C, H, W).
            Without data the run holds only weights, and the lenses ask for data.
        model_args: the factory's keyword arguments, a dict or a JSON object's text.
        task: "classification" or "regression"; by default classification when the targets
            are whole numbers that index the model's outputs.
        name: the run's name (by default the factory's and the data's names).
        store: a `RunStore` (the default store when None).

    Raises:
        ValueError: with a sentence, before anything is written, for a factory that cannot
            be found or does not return a model, weights that do not fit it, data it
            rejects, or a task its outputs do not match.

    Example:
        >>> run_id = import_run("resnet.py:make_resnet", "checkpoints/", data="digits.npz")
    """
    return save_import(check_import(model, weights, data, model_args, task), name, store)


def save_import(checked: Checked, name: str = "", store=None) -> str:
    """Write a checked import as a run: its settings, checkpoints and data arrays (the run needs
    nothing outside the store afterwards); all or nothing."""
    from engine.store import RunStore

    store = store if store is not None else RunStore()
    _trust(store, checked.settings[SETTINGS_KEY]["factory"])
    factory = checked.settings[SETTINGS_KEY]["factory"].rpartition(":")[2]
    name = name or (f"{factory} on {checked.settings['dataset']}" if checked.arrays is not None else factory)
    run_id = store.create(name, checked.settings)
    try:
        for step, state in checked.checkpoints.items():
            store.save_checkpoint(run_id, step, state)
        if checked.arrays is not None:
            store.save_artifact(run_id, DATASET_ARTIFACT, _dataset_arrays(checked.arrays),
                                {"name": checked.arrays.name, "task": checked.settings["task"]})
        store.finish(run_id, "done", summary=_summary(checked))
    except BaseException:
        store.delete(run_id)  # nothing half-written stays behind
        raise
    return run_id


def _dataset_arrays(arrays: Arrays) -> dict[str, np.ndarray]:
    return {"x_train": arrays.x_train.astype(np.float32), "y_train": arrays.y_train,
            "x_test": arrays.x_test.astype(np.float32), "y_test": arrays.y_test}


def _summary(checked: Checked) -> dict:
    """What `list` shows: the last step, and the test loss (and accuracy) of the last checkpoint."""
    summary = {"steps": max(checked.checkpoints)}
    if checked.dataset is None:
        return summary
    model, d = checked.model, checked.dataset
    model.load_state_dict(checked.checkpoints[max(checked.checkpoints)])
    if checked.settings[SETTINGS_KEY]["unflatten"]:
        model.register_forward_pre_hook(Unflatten(d.input_shape))
    with torch.no_grad(), evaluating(model):
        outputs = torch.cat([model(d.x_test[s:s + EVAL_BATCH]) for s in range(0, len(d.x_test), EVAL_BATCH)])
    if d.task == "classification":
        summary["test_loss"] = float(torch.nn.functional.cross_entropy(outputs, d.y_test))
        summary["test_accuracy"] = float((outputs.argmax(1) == d.y_test).float().mean())
    else:
        summary["test_loss"] = float(torch.nn.functional.mse_loss(outputs, d.y_test))
    return summary


# ---------------------------------------------------------------- uploads (the Runs page)


def offered_factories() -> list[str]:
    """The factories the app offers, as named when the server started ($DYNAMICS_LAB_MODELS,
    comma-separated FILE.py:FACTORY or package.module:FACTORY). A browser only picks one."""
    return [s.strip() for s in os.environ.get(MODELS_VAR, "").split(",") if s.strip()]


def _safe_stem(name: str, default: str) -> str:
    """An uploaded file's stem if it is a plain name (letters, digits, - and _), else `default`."""
    stem = Path(str(name)).stem
    return stem if re.fullmatch(r"[A-Za-z0-9_-]{1,60}", stem) else default


def import_uploaded(factory: str, weights: list[tuple[str, bytes]], data: Optional[tuple[str, bytes]] = None,
                    *, model_args: Union[str, dict, None] = None, task: Optional[str] = None,
                    name: str = "", store=None) -> str:
    """`import_run` for files uploaded through a browser; return the run's id.

    Args:
        factory: one of `offered_factories()`; anything else is refused, so a browser never
            names the code that runs.
        weights: (file name, bytes) of one .safetensors/.pt/.pth file, or of several
            step-<N>.safetensors files (a trajectory).
        data: (file name, bytes) of an .npz or .csv file, or None.
    """
    import tempfile

    if factory not in offered_factories():
        raise ValueError(f"'{factory}' is not one of the models this lab was started with; start it with "
                         f"{MODELS_VAR}=FILE.py:FACTORY to offer a model.")
    if not weights:
        raise ValueError("Upload the model's weights: a .safetensors file, or step-<N>.safetensors files.")
    with tempfile.TemporaryDirectory(prefix="dynamics-lab-upload-") as folder:
        folder = Path(folder)
        if len(weights) == 1:
            upload, content = weights[0]
            suffix = Path(str(upload)).suffix.lower()
            if suffix not in (".safetensors", ".pt", ".pth"):
                raise ValueError(f"{upload} is not a .safetensors, .pt or .pth weights file.")
            weights_path = folder / (_safe_stem(upload, "weights") + suffix)
            weights_path.write_bytes(content)
        else:
            weights_path = folder / "checkpoints"
            weights_path.mkdir()
            for upload, content in weights:
                match = _STEP_FILE.match(Path(str(upload)).name)
                if not match:
                    raise ValueError(f"{upload}: several weights files must each be named step-<N>.safetensors.")
                (weights_path / f"step-{int(match.group(1))}.safetensors").write_bytes(content)
        data_path = None
        if data is not None:
            upload, content = data
            suffix = Path(str(upload)).suffix.lower()
            if suffix not in (".npz", ".csv"):
                raise ValueError(f"{upload} is not an .npz or .csv data file.")
            data_path = folder / (_safe_stem(upload, "data") + suffix)
            data_path.write_bytes(content)
        checked = check_import(factory, weights_path, None if data_path is None else str(data_path),
                               model_args, task)
    # The files lived in a folder that is gone now: the run records what was uploaded, and keeps
    # the weights (its checkpoints) and the data (its "dataset" artifact) itself.
    checked.settings[SETTINGS_KEY]["weights"] = UPLOADED + ", ".join(sorted(str(w[0]) for w in weights))
    if data is not None:
        checked.settings["data"] = UPLOADED + str(data[0])
    return save_import(checked, name, store)


# ---------------------------------------------------------------- reading an imported run back


def load_model(store, run_id: str, step: Optional[int] = None, device="cpu") -> nn.Module:
    """An imported run's model, rebuilt through its recorded factory, with a checkpoint's
    weights (the last by default). A model that wants natural-shaped inputs takes the lab's
    flat ones too (see `Unflatten`)."""
    settings = store.settings(run_id)
    record = settings[SETTINGS_KEY]
    if record.get("factory") not in trusted_factories(store):
        raise ValueError(f"Run {run_id} builds its model with {record.get('factory')!r}, which was not imported "
                         f"on this machine, and the lab runs only model code you named yourself. To trust it, "
                         f"import the weights again: python -m engine import --model FACTORY --weights ...")
    model = build_model(record["factory"], record.get("args", {}))
    model.load_state_dict(store.load_checkpoint(run_id, step))
    if record.get("unflatten"):
        model.register_forward_pre_hook(Unflatten(settings["input_shape"]))
    return model.to(device)


def load_dataset(store, run_id: str) -> datasets.Dataset:
    """An imported run's data, with its labels as given (one class per model output)."""
    settings = store.settings(run_id)
    saved = store.load_artifact(run_id, DATASET_ARTIFACT)
    if saved is None:
        raise ValueError(f"Run {run_id} was imported without data; import it again with --data "
                         f"(an .npz or .csv file) to look at it through the lenses.")
    arrays, meta = saved
    loaded = Arrays(meta.get("name", settings.get("dataset", "imported")), arrays["x_train"], arrays["y_train"],
                    arrays["x_test"], arrays["y_test"])
    return make_dataset(loaded, settings["task"], settings["n_outputs"])
