"""Presets: named experiments that reproduce a known result in one click.

Each preset is a JSON file in `assets/presets/`: a title, the lens to look through, a
description of what to look for, and one to four runs, each a name and flat settings (the
keys of `engine.experiment.Experiment.to_flat`, as in the Train page's URL).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from engine.experiment import Experiment

FOLDER = Path(__file__).resolve().parent.parent / "assets" / "presets"
LENSES = ("train", "landscape", "ntk", "geometry", "levelset", "pruning", "lazy")


@dataclass
class PresetRun:
    name: str
    experiment: Experiment


@dataclass
class Preset:
    key: str  # the file's name without .json
    title: str
    lens: str
    description: str
    runs: list[PresetRun]


def load(path: Path) -> Preset:
    """One preset file, checked: every run's settings must parse and be valid."""
    record = json.loads(path.read_text())
    if record.get("lens") not in LENSES:
        raise ValueError(f"Preset {path.name}: the lens must be one of {', '.join(LENSES)}.")
    if not 1 <= len(record.get("runs", [])) <= 4:
        raise ValueError(f"Preset {path.name} must have one to four runs.")
    runs = []
    for run in record["runs"]:
        experiment, errors = Experiment.from_flat(run["settings"])
        errors |= experiment.errors()
        if errors:
            raise ValueError(f"Preset {path.name}, run '{run['name']}': " + " ".join(errors.values()))
        runs.append(PresetRun(run["name"], experiment))
    return Preset(path.stem, record["title"], record["lens"], record["description"], runs)


def all_presets(folder: Path = FOLDER) -> list[Preset]:
    """Every preset, in the order of their titles."""
    return sorted((load(p) for p in folder.glob("*.json")), key=lambda p: p.title)
