"""The engine from the command line.

    python -m engine train data=moons model.width=64 train.steps=2000 [--name NAME] [--no-save]
    python -m engine list
    python -m engine import --model FILE.py:FACTORY [--model-args JSON] --weights PATH [--data DATA] [--task classification|regression] [--name NAME]
    python -m engine sweep model.width=16,32 train.lr=0.05,0.1 [--backend local|ray] [--address ADDRESS] [--out DIR] [--name NAME]
    python -m engine landscape RUN_ID [--what surface] [resolution=51 span=0.5 ...] [--out DIR]
    python -m engine ntk|geometry|levelset|prune RUN_ID [--what ...] [key=value ...] [--out DIR]

Training settings are the flat keys of `engine.experiment.Experiment` (the same as the Train
page's URL): `data`, `data.<option>`, `model.<field>`, `train.<field>`. A lens command runs
one analysis of a stored run headless (the same recipe the lens page runs), keeps it in the
run store, and writes it as .npz (and .csv where it is a table); `python -m viz FILE.npz`
turns that file into an interactive HTML figure.
"""
from __future__ import annotations

import argparse
import inspect
import sys
import typing
from pathlib import Path

from engine import analysis, recipes, results
from engine.experiment import Experiment, parse, parse_typed, train_job
from engine.store import RunStore

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
              "gallery": recipes.pruning_gallery, "regions": recipes.pruning_regions},
}


class PrintingContext:
    """A job context that prints progress lines instead of reporting to a page."""

    cancelled = False

    def __init__(self):
        self.last_message = ""

    def report(self, progress=None, message=None, **partial):
        if message and message != self.last_message:
            self.last_message = message
            speed = partial.get("steps_per_second")
            print(message + (f" ({speed:,.0f} steps/s)" if speed else ""), flush=True)


def parse_settings(pairs: list[str]) -> dict[str, str]:
    flat = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"Settings are key=value pairs; '{pair}' has no '='.")
        flat[key.strip()] = value
    return flat


def train(args) -> int:
    experiment, errors = Experiment.from_flat(parse_settings(args.settings))
    errors |= experiment.errors()
    if errors:
        for key, sentence in errors.items():
            print(f"{key}: {sentence}", file=sys.stderr)
        return 2
    store = None if args.no_save else RunStore(args.store)
    result = train_job(PrintingContext(), experiment, store=store, name=args.name, device=args.device)
    print(result["message"])
    if result["run_id"]:
        print(f"Saved as run {result['run_id']} in {store.root}")
    return 0 if result["status"] == "done" else 1


def recipe_settings(recipe, pairs: list[str]) -> dict:
    """key=value texts read as the types of the recipe's own defaults."""
    parameters = inspect.signature(recipe).parameters
    hints = typing.get_type_hints(recipe)
    settings = {}
    for key, text in parse_settings(pairs).items():
        if key not in parameters or key in ("ctx", "store", "run_id"):
            names = [n for n in parameters if n not in ("ctx", "store", "run_id")]
            raise SystemExit(f"'{key}' is not a setting of this analysis; it takes: {', '.join(names)}.")
        default = parameters[key].default
        if default in (None, inspect.Parameter.empty):  # read as its annotation says: step=0 is 0
            settings[key] = parse_typed(text, hints[key], None) if key in hints else text
        else:
            settings[key] = parse(text, default)
        if isinstance(settings[key], list):
            settings[key] = tuple(settings[key])
    return settings


def analyse(args) -> int:
    lens = LENSES[args.command]
    what = args.what or next(iter(lens))
    if what not in lens:
        raise SystemExit(f"{args.command} computes one of: {', '.join(lens)}.")
    recipe, settings = lens[what], recipe_settings(lens[what], args.settings)
    store = RunStore(args.store)
    try:
        result = analysis.cached(None, store, args.run_id, f"cli-{args.command}-{what}", settings, recipe)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{args.command}-{what}-{args.run_id}"
    stem.with_suffix(".npz").write_bytes(results.to_npz_bytes(result))
    print(f"Wrote {stem.with_suffix('.npz')}")
    table = results.to_csv(result)
    if table is not None:
        stem.with_suffix(".csv").write_text(table)
        print(f"Wrote {stem.with_suffix('.csv')}")
    return 0


def sweep(args) -> int:
    from engine.sweep import command  # Ray and the sweep machinery load only for a sweep
    return command(args.settings, store_root=args.store, backend=args.backend, address=args.address,
                   out=args.out, name=args.name, device=args.device,
                   echo=lambda line: print(line, file=sys.stderr, flush=True))


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
    for lens, kinds in LENSES.items():
        p = commands.add_parser(lens, help=f"compute a {lens} analysis of a stored run ({', '.join(kinds)})")
        p.add_argument("run_id", help="the run's id (see `list`)")
        p.add_argument("settings", nargs="*", help="key=value settings of the analysis")
        p.add_argument("--what", choices=list(kinds), help=f"what to compute (default {next(iter(kinds))})")
        p.add_argument("--out", default=".", help="folder for the .npz (and .csv) files")
        p.set_defaults(run=analyse)
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
