"""What every settings section (`ModelSpec`, `TrainConfig`, `WatchConfig`) shares: plain dicts
in and out, for settings.json, the URL and the command line, and the checks of whole numbers."""
from __future__ import annotations

from dataclasses import asdict, fields

__all__ = ["Section", "is_whole"]


class Section:
    """A mixin for a settings dataclass: `to_dict` and a `from_dict` that ignores unknown keys
    (a run saved by another version of the lab still loads)."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def is_whole(v) -> bool:
    """An int that is not a bool (True is an int in Python)."""
    return isinstance(v, int) and not isinstance(v, bool)
