"""The engine from the command line.

    python -m engine train data=moons model.width=64 train.steps=2000 [--name NAME] [--no-save]
    python -m engine list

Settings are the flat keys of `engine.experiment.Experiment` (the same as the Train page's
URL): `data`, `data.<option>`, `model.<field>`, `train.<field>`.
"""
from __future__ import annotations

import argparse
import sys

from engine.experiment import Experiment, train_job
from engine.store import RunStore


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
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
