"""Presets: named experiments that reproduce a known result in one click.

Each preset is a JSON file in `assets/presets/`: a title, the lens to look through, a
description of what to look for, and one to four runs, each a name and flat settings (the
keys of `engine.experiment.Experiment.to_flat`, as in the Train page's URL).

A preset may also be a step of a lesson: `"lesson": [lesson name, step number]`, `"watch"`
(what to look at while it trains) and `"knob"` (one setting the learner turns: its flat
key, a label and the values to choose from; the chosen value replaces that setting in the
last run).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from engine.experiment import Experiment

__all__ = ["PresetRun", "Preset", "load", "lesson", "all_presets"]


def _presets_folder() -> Path:
    """assets/presets in the repository; `pip install .` puts them in <prefix>/share/dynamics-lab."""
    in_repository = Path(__file__).resolve().parent.parent / "assets" / "presets"
    installed = Path(sys.prefix) / "share" / "dynamics-lab" / "presets"
    return in_repository if in_repository.is_dir() or not installed.is_dir() else installed


FOLDER = _presets_folder()
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
    lesson: Optional[tuple[str, int]] = None
    watch: str = ""
    knob: dict = field(default_factory=dict)  # {"key", "label", "choices"}

    def with_knob(self, value: str) -> list[PresetRun]:
        """The runs with the knob's setting of the last run set to `value` (flat text)."""
        if not self.knob:
            return self.runs
        last = self.runs[-1]
        flat = last.experiment.to_flat() | {self.knob["key"]: str(value)}
        experiment, errors = Experiment.from_flat(flat)
        errors |= experiment.errors()
        if errors:
            raise ValueError(" ".join(errors.values()))
        return self.runs[:-1] + [PresetRun(self._knob_name(last, str(value)), experiment)]

    def _knob_name(self, last: PresetRun, value: str) -> str:
        """The last run's name for the knob's `value`, saying the setting once: "alpha 10" ->
        "alpha 30", "mup" -> "meanfield", any other name -> "full rank (rank 2)"."""
        label, name = self.knob["label"], last.name.split(" (")[0]
        if name.startswith(f"{label} "):
            return f"{label} {value}"
        if name in (value, last.experiment.to_flat().get(self.knob["key"])):
            return value
        return f"{name} ({label} {value})"


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
    lesson = record.get("lesson")
    preset = Preset(path.stem, record["title"], record["lens"], record["description"], runs,
                    (str(lesson[0]), int(lesson[1])) if lesson else None, record.get("watch", ""),
                    record.get("knob", {}))
    for value in preset.knob.get("choices", []):
        try:
            preset.with_knob(value)
        except ValueError as exc:
            raise ValueError(f"Preset {path.name}, knob value {value}: {exc}") from None
    return preset


def lesson(name: str, folder: Path = FOLDER) -> list[Preset]:
    """The steps of a lesson, in order."""
    steps = [p for p in all_presets(folder) if p.lesson and p.lesson[0] == name]
    return sorted(steps, key=lambda p: p.lesson[1])


def all_presets(folder: Path = FOLDER) -> list[Preset]:
    """Every preset, in the order of their titles."""
    return sorted((load(p) for p in folder.glob("*.json")), key=lambda p: p.title)
