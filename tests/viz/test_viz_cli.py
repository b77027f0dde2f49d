"""`python -m viz`: every result the engine saves has a figure."""
import dataclasses

from engine import results
from viz.__main__ import FIGURES, NOT_DRAWN


def test_every_result_type_has_a_figure():
    kinds = {name for name, kind in vars(results).items()
             if dataclasses.is_dataclass(kind) and kind.__module__ == "engine.results"}
    assert kinds - NOT_DRAWN - set(FIGURES) == set()
    assert set(FIGURES) <= kinds
