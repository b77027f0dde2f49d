"""The engine from the command line.

    python -m engine train data=moons model.width=64 train.steps=2000 [--name NAME] [--no-save]
    python -m engine list
    python -m engine import --model FILE.py:FACTORY [--model-args JSON] --weights PATH [--data DATA]
                           [--task classification|regression] [--name NAME]
    python -m engine sweep model.width=16,32 train.lr=0.05,0.1 [--backend local|ray] [--address ADDRESS] [--out DIR] [--name NAME]
    python -m engine landscape RUN_ID [--what surface] [resolution=51 span=0.5 ...] [--out DIR]
    python -m engine ntk|geometry|levelset|prune RUN_ID [--what ...] [key=value ...] [--out DIR]
    python -m engine doctor [--device cuda|mps|cpu] [--quick]

Training settings are the flat keys of `engine.experiment.Experiment` (the same as the Train
page's URL): `data`, `data.<option>`, `model.<field>`, `train.<field>`. A lens command runs
one analysis of a stored run headless (the same recipe the lens page runs), keeps it in the
run store, and writes it as .npz (and .csv where it is a table); `python -m viz FILE.npz`
turns that file into an interactive HTML figure.

Every setting is checked before any work starts: one that is unknown, missing, of the wrong
type or out of range gets a sentence that names it and says what it takes, and exit code 2.
Progress (what a page shows in its progress bar) goes to stderr, `--quiet` silences it;
results and the files written go to stdout.
"""
from __future__ import annotations

import argparse
import inspect
import math
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from engine import analysis, ntk, pruning, recipes, results, tables
from engine.experiment import Experiment, parse, train_job
from engine.store import RunStore

__all__ = ["PrintingContext", "parse_settings", "train", "refuse", "device_error", "Allowed", "at_least", "above",
           "between", "one_of", "each", "allowed", "Setting", "recipe_settings", "read_settings", "run_errors",
           "out_error", "analyse", "sweep", "doctor", "import_model", "list_runs", "main", "LENSES", "FREE_TEXT"]

# lens -> what it can compute -> the recipe (the first is the default)
LENSES = {
    "landscape": {"surface": recipes.random_plane_surface, "trajectory-plane": recipes.trajectory_surface,
                  "trajectory": recipes.trajectory, "interpolation": recipes.interpolation,
                  "three-plane": recipes.three_run_plane,
                  "sharpness": recipes.sharpness, "density": recipes.spectral_density,
                  "convexity": recipes.convexity},
    "ntk": {"spectrum": recipes.ntk_spectrum, "eigenfunctions": recipes.ntk_eigenfunctions,
            "power": recipes.ntk_target_power, "trajectory": recipes.ntk_trajectory,
            "modes": recipes.ntk_mode_curves, "extremes": recipes.ntk_extreme_samples,
            "fourier": recipes.ntk_fourier, "layers": recipes.ntk_layers,
            "power-trajectory": recipes.ntk_power_over_training},
    "geometry": {"embedding": recipes.embedding, "cka": recipes.layer_similarity,
                 "rsa": recipes.representational_dissimilarity, "curves": recipes.geometry_over_training,
                 "cross-cka": recipes.cross_run_similarity, "units": recipes.matched_units,
                 "frames": recipes.embedding_over_training},
    "levelset": {"traversal": recipes.levelset_traversal, "triangle": recipes.levelset_triangle,
                 "map": recipes.levelset_map, "width": recipes.levelset_width},
    "prune": {"sweep": recipes.pruning_sweep, "geometry": recipes.pruned_geometry,
              "lottery": recipes.lottery_tickets, "masks": recipes.pruning_masks,
              "gallery": recipes.pruning_gallery, "regions": recipes.pruning_regions,
              "channels": recipes.channel_removal},
}


class PrintingContext:
    """A job context that prints on stderr what a page shows in a job's progress bar: each new
    message, and, for jobs that report only a fraction, the label and every tenth reached.
    Quiet, it prints nothing; stdout stays for results."""

    cancelled = False  # Ctrl+C stops a command

    def __init__(self, label: str = "", quiet: bool = False):
        self.label, self.quiet = label, quiet
        self.last_message = ""
        self.last_tenth = -1

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)

    def check(self) -> None:
        """Jobs call this between units of work to notice a cancel request; none comes here."""

    def report(self, progress=None, message=None, **partial):
        if message:
            if message != self.last_message:
                self.last_message = message
                speed = partial.get("steps_per_second")
                self.say(message + (f" ({speed:,.0f} steps/s)" if speed else ""))
        elif progress is not None:
            tenth = int(10 * min(max(progress, 0.0), 1.0))
            if tenth > self.last_tenth:
                self.last_tenth = tenth
                self.say(f"{self.label}: {10 * tenth}%")


def parse_settings(pairs: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """key=value texts as key -> text, and a sentence for each text that is not a pair."""
    flat, errors = {}, {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if sep:
            flat[key.strip()] = value
        else:
            errors[pair] = f"Settings are key=value pairs; '{pair}' has no '='."
    return flat, errors


def train(args) -> int:
    flat, errors = parse_settings(args.settings)
    experiment, unread = Experiment.from_flat(flat)
    errors |= unread | experiment.errors()
    if args.device is not None and (problem := device_error(args.device)):
        errors["--device"] = problem
    if errors:
        return refuse(errors)
    store = None if args.no_save else RunStore(args.store)
    ctx = PrintingContext("train", quiet=args.quiet)
    result = train_job(ctx, experiment, store=store, name=args.name, device=args.device)
    print(result["message"])
    if result["run_id"]:
        print(f"Saved as run {result['run_id']} in {store.root}")
    return 0 if result["status"] == "done" else 1


def refuse(errors: dict[str, str]) -> int:
    """Print a sentence for each setting that is not allowed, on stderr; the exit code 2."""
    for key, sentence in errors.items():
        print(f"{key}: {sentence}", file=sys.stderr)
    return 2


def device_error(name: str) -> Optional[str]:
    """Why `name` is not a device to train on here, or None."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        return f"'{name}' is not a device; use cpu, cuda or mps."
    available = {"cpu": True, "cuda": torch.cuda.is_available(),
                 "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()}
    if not available.get(device.type, False):
        return f"{name} is not available on this machine; use {', '.join(k for k, v in available.items() if v)}."
    return None


# ---------------------------------------------------------------- what each analysis setting allows


@dataclass(frozen=True)
class Allowed:
    """The values one setting takes: a test, and the phrase that says them to a user."""

    phrase: str  # completes "span takes ...", e.g. "a number above 0"
    test: Callable[[object], bool]
    item: Optional["Allowed"] = None  # for a list: what each item allows

    def culprit(self, value, text: str) -> str:
        """What to name as not allowed: a list's first bad item, else the whole text."""
        bad = [v for v in value if not self.item.test(v)] if self.item else []
        return str(bad[0]) if bad else text


def at_least(low) -> Allowed:
    kind = "a whole number" if isinstance(low, int) else "a number"
    return Allowed(f"{kind} of at least {low}", lambda v: math.isfinite(v) and v >= low)


def above(low) -> Allowed:
    return Allowed(f"a number above {low}", lambda v: math.isfinite(v) and v > low)


def between(low, high, *, low_in: bool = True, high_in: bool = True) -> Allowed:
    ends = {(True, True): f"from {low} to {high}", (True, False): f"from {low} up to, but not including, {high}",
            (False, False): f"between {low} and {high}, both excluded"}[low_in, high_in]
    return Allowed(f"a number {ends}", lambda v: (low <= v if low_in else low < v) and (v <= high if high_in else v < high))


def one_of(*choices) -> Allowed:
    return Allowed(f"one of: {', '.join(map(str, choices))}", lambda v: v in choices)


def each(item: Allowed) -> Allowed:
    return Allowed(f"a comma-separated list, each {item.phrase}", lambda v: len(v) > 0 and all(map(item.test, v)),
                   item)


SPARSITY = between(0, 1, high_in=False)

# setting name -> what it allows, the same in every analysis that takes it...
ALLOWED = {
    "step": at_least(0), "seed": at_least(0), "source": at_least(0), "class_index": at_least(0),
    "rewind_step": at_least(0), "finetune_steps": at_least(0),
    "samples": at_least(1), "k": at_least(1), "iters": at_least(1), "runs": at_least(1), "steps": at_least(1),
    "per_side": at_least(1), "max_frequency": at_least(1), "directions": at_least(1), "count": at_least(1),
    "rounds": at_least(1),
    "resolution": at_least(2), "points": at_least(2), "grid": at_least(2), "frames": at_least(2),
    "span": above(0), "step_size": above(0), "margin": at_least(0.0), "radius": at_least(0.0),
    "threshold": between(0, 1), "along": between(0, 1), "rate": between(0, 1, low_in=False, high_in=False),
    "sparsity": SPARSITY, "sparsities": each(SPARSITY), "targets": each(at_least(0)), "top_k": each(at_least(1)),
    "split": one_of("train", "test"), "norm": one_of("filter", "layer", "model"), "kind": one_of(*ntk.MATRIX_KINDS),
    "scope": one_of("global", "layer"), "colour": one_of(*recipes.COLOURS), "dim": one_of(2, 3),
}
# ...except where a lens gives a name its own meaning
LENS_ALLOWED = {
    "geometry": {"method": one_of("pca", "umap")},
    "prune": {"method": one_of(*pruning.method_names()), "methods": each(one_of(*pruning.method_names()))},
}
FREE_TEXT = ("layer", "other", "others")  # names checked where they are used (layers, run ids)
RUN_IDS = ("other", "others")  # settings that name other runs of the store

# A recipe whose **settings pass on to another recipe takes that recipe's settings.
PASSES_ON = {recipes.levelset_triangle: recipes.levelset_traversal,
             recipes.levelset_width: recipes.levelset_traversal}


def allowed(lens: str, key: str) -> Optional[Allowed]:
    return LENS_ALLOWED.get(lens, {}).get(key) or ALLOWED.get(key)


@dataclass(frozen=True)
class Setting:
    """One setting a recipe takes: its default (`inspect.Parameter.empty` when it has none)
    and its annotation."""

    default: object
    hint: object

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty

    def read(self, text: str):
        """`text` as this setting's type: its default's, or its annotation's where the default
        is None or missing (step=0 is 0); "none" or nothing is None where the annotation is
        Optional. ValueError if it is not."""
        kind = self.hint
        if type(None) in typing.get_args(kind):
            if text.strip().lower() in ("", "none"):
                return None
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        has_default = not self.required and self.default is not None
        value = parse(text, self.default if has_default else kind() if isinstance(kind, type) else "")
        return tuple(value) if isinstance(value, list) else value


def recipe_settings(recipe) -> dict[str, Setting]:
    """The settings a recipe takes by name (not the job's context, the store or the run)."""
    hints = typing.get_type_hints(recipe)
    settings = {}
    for name, parameter in inspect.signature(recipe).parameters.items():
        if parameter.kind is parameter.VAR_KEYWORD:
            settings |= recipe_settings(PASSES_ON[recipe])
        elif name not in ("ctx", "store", "run_id"):
            settings[name] = Setting(parameter.default, hints.get(name))
    return settings


def read_settings(lens: str, recipe, pairs: list[str]) -> tuple[dict, dict[str, str]]:
    """key=value texts as a recipe's settings, and a sentence for each key that is unknown,
    missing or not allowed: its type comes from the recipe, its range or choices from ALLOWED."""
    flat, errors = parse_settings(pairs)
    takes = recipe_settings(recipe)
    values = {}
    for key, text in flat.items():
        if key not in takes:
            errors[key] = f"'{key}' is not a setting of this analysis; it takes: {', '.join(takes)}."
            continue
        rule = allowed(lens, key)
        says = f"{key} takes {rule.phrase}." if rule else ""
        try:
            values[key] = takes[key].read(text)
        except ValueError as exc:
            errors[key] = f"{str(exc).rstrip('.')}; {says}" if says else str(exc)
            continue
        if rule and values[key] is not None and not rule.test(values[key]):
            errors[key] = f"'{rule.culprit(values[key], text)}' is not allowed; {says}"
    for key in takes:
        if takes[key].required and key not in flat:
            errors[key] = f"This analysis needs {key}=...; it takes: {', '.join(takes)}."
    return values, errors


def run_errors(store: RunStore, run_id: str, settings: dict) -> dict[str, str]:
    """A sentence for the run, and each run a setting names, that is not in the store."""
    named = {"run": [run_id]} | {k: [v] if isinstance(v, str) else list(v)
                                 for k, v in settings.items() if k in RUN_IDS}
    errors = {}
    for key, ids in named.items():
        missing = [i for i in ids if i and not _in_store(store, i)]
        if missing:
            errors[key] = (f"No run '{missing[0]}' in the run store at {store.root}; "
                           "`python -m engine list` shows its runs.")
    return errors


def _in_store(store: RunStore, run_id: str) -> bool:
    try:
        return store.exists(run_id)
    except ValueError:  # not a valid id at all
        return False


def out_error(folder: str) -> Optional[str]:
    """Why the results cannot be written into `folder` (made if missing), or None."""
    if Path(folder).exists() and not Path(folder).is_dir():
        return f"'{folder}' is a file; --out takes a folder."
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"Cannot write results into '{folder}': {exc.strerror or exc}."
    return None


def analyse(args) -> int:
    lens = LENSES[args.command]
    what = args.what or next(iter(lens))
    recipe, store = lens[what], RunStore(args.store)
    settings, errors = read_settings(args.command, recipe, args.settings)
    errors |= run_errors(store, args.run_id, settings)
    if problem := out_error(args.out):
        errors["--out"] = problem
    if errors:
        return refuse(errors)
    key, label = f"cli-{args.command}-{what}", f"{args.command} {what}"
    ctx = PrintingContext(label, quiet=args.quiet)
    if analysis.load(store, args.run_id, key, settings, recipe) is None:
        ctx.say(f"Computing the {label} of run {args.run_id}…")
    else:
        ctx.say(f"The {label} of run {args.run_id} with these settings is in the run store.")
    try:
        result = analysis.cached(ctx, store, args.run_id, key, settings, recipe)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    stem = Path(args.out) / f"{args.command}-{what}-{args.run_id}"
    stem.with_suffix(".npz").write_bytes(results.to_npz_bytes(result))
    print(f"Wrote {stem.with_suffix('.npz')}")
    table = tables.to_csv(result)
    if table is not None:
        stem.with_suffix(".csv").write_text(table)
        print(f"Wrote {stem.with_suffix('.csv')}")
    return 0


def sweep(args) -> int:
    from engine.sweep import command  # Ray and the sweep machinery load only for a sweep
    return command(args.settings, store_root=args.store, backend=args.backend, address=args.address,
                   out=args.out, name=args.name, device=args.device,
                   echo=lambda line: print(line, file=sys.stderr, flush=True))


def doctor(args) -> int:
    """Compare the trainer and every lens on a device with the CPU (see `engine.doctor`):
    exit 1 when a check fails, 2 when the device is not here."""
    from engine import doctor as checks
    from engine.device import pick
    device = args.device or str(pick())
    if problem := device_error(device):
        return refuse({"--device": problem})
    ctx = PrintingContext("doctor", quiet=args.quiet)
    report = checks.run(device, quick=args.quick, say=ctx.say)
    print(checks.table(report))
    return 0 if report.passed else 1


def import_model(args) -> int:
    """Import a user's model, checkpoints and data as a run (see `engine.external`)."""
    from engine.external import import_run
    try:
        run_id = import_run(args.model, args.weights, args.data, model_args=args.model_args,
                            task=args.task, name=args.name, store=RunStore(args.store))
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"Saved as run {run_id}")
    return 0


def list_runs(args) -> int:
    for run in RunStore(args.store).list():
        print(f"{run.id}  {run.status:9}  {run.steps:>8} steps  {run.name}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default=None, help="run store folder (default: $DYNAMICS_LAB_HOME/runs)")
    parser.add_argument("--quiet", action="store_true", help="print no progress on stderr")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("train", help="train an experiment and save it as a run")
    p.add_argument("settings", nargs="*", help="key=value settings, e.g. model.width=64")
    p.add_argument("--name", default="", help="the run's name")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    p.add_argument("--no-save", action="store_true", help="do not save the run")
    p.set_defaults(run=train)
    p = commands.add_parser("list", help="list saved runs")
    p.set_defaults(run=list_runs)
    p = commands.add_parser("import", help="import your own model, its checkpoints and its data as a run")
    p.add_argument("--model", required=True, help="FILE.py:FACTORY or package.module:FACTORY returning an nn.Module")
    p.add_argument("--model-args", default=None, help="the factory's keyword arguments as a JSON object")
    p.add_argument("--weights", required=True,
                   help="a .safetensors state dict, a folder of step-<N>.safetensors files, or a .pt/.pth state dict")
    p.add_argument("--data", default=None, help="an .npz (x_train, y_train, x_test, y_test or x, y), a .csv, "
                                                 "a folder of images (one sub-folder per class), "
                                                 "or a built-in dataset's name")
    p.add_argument("--task", choices=["classification", "regression"], default=None,
                   help="by default classification when the targets are whole numbers that index the outputs")
    p.add_argument("--name", default="", help="the run's name")
    p.set_defaults(run=import_model)
    p = commands.add_parser("sweep", help="train every cell of a grid of settings (model.width=16,32 ...)")
    p.add_argument("settings", nargs="*", help="key=value settings; a comma list spans cells (';' for list values)")
    p.add_argument("--backend", choices=["local", "ray"], default="local", help="where cells train (default local)")
    p.add_argument("--address", default=None, help="a Ray cluster to join (default: RAY_ADDRESS, else an embedded Ray)")
    p.add_argument("--out", default=".", help="folder for sweep-<id>.csv")
    p.add_argument("--name", default="", help="the sweep's name")
    p.add_argument("--device", default=None, help="cpu or cuda (default: CUDA where the workers have it)")
    p.set_defaults(run=sweep)
    p = commands.add_parser("doctor", help="check that a device computes what the CPU does, and time both")
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    p.add_argument("--quick", action="store_true", help="a tiny size that takes seconds, not minutes")
    p.set_defaults(run=doctor)
    for lens, kinds in LENSES.items():
        p = commands.add_parser(lens, help=f"compute a {lens} analysis of a stored run ({', '.join(kinds)})")
        p.add_argument("run_id", help="the run's id (see `list`)")
        p.add_argument("settings", nargs="*", help="key=value settings of the analysis")
        p.add_argument("--what", choices=list(kinds), help=f"what to compute (default {next(iter(kinds))})")
        p.add_argument("--out", default=".", help="folder for the .npz (and .csv) files")
        p.set_defaults(run=analyse)
    for command in commands.choices.values():  # every command, wherever --quiet is written
        command.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS,
                             help="print no progress on stderr (results still go to stdout)")
    # key=value settings may come after options (`--what eigenfunctions k=4`), which
    # argparse leaves over; they join the settings, anything else is an error.
    args, extra = parser.parse_known_args(argv)
    unknown = [e for e in extra if e.startswith("-") or "=" not in e or not hasattr(args, "settings")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        args.settings = list(args.settings) + extra
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
