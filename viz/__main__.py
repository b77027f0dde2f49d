"""Turn a result file written by `python -m engine <lens> ...` into an interactive HTML figure.

    python -m viz landscape-surface-RUN.npz [--out figure.html]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from engine import results
from viz import geometry, landscape, lazy, levelset, ntk, predictions, pruning, training

__all__ = ["load", "main", "FIGURES", "NOT_DRAWN"]


def _line_or_plane(surface):
    return landscape.contour(surface) if surface.ys is not None else landscape.curves(surface)


# result type -> its default figure
FIGURES = {
    "Surface": _line_or_plane,
    "LinearPath": landscape.curves,
    "Sharpness": landscape.sharpness,
    "SpectralDensity": lambda r: landscape.spectral_density(r.grid, r.density),
    "ConvexityMap": landscape.convexity,
    "KernelSpectrum": ntk.spectrum_figure,
    "Eigenfunctions": ntk.eigenfunctions_figure,
    "TargetPower": ntk.target_power_figure,
    "ModeCurves": ntk.mode_curves_figure,
    "KernelTrajectory": ntk.kernel_trajectory_figure,
    "Embedding": geometry.embedding_scatter,
    "SimilarityMatrix": geometry.similarity_heatmap,
    "RDMSet": geometry.rdm_panels,
    "GeometryCurves": geometry.geometry_curves,
    "UnitMatch": geometry.unit_match_figure,
    "LevelSetPath": levelset.path_profile,
    "TriangleConfidence": levelset.triangle_map,
    "PruningSweep": pruning.accuracy_curves,
    "LastLayerGeometry": pruning.geometry_scatter,
    "LotteryTickets": pruning.lottery_curves,
    "PruningMasks": lambda r: pruning.mask_images(r.masks),
    "PrunedRegions": pruning.regions_side_by_side,
    "ChannelRemoval": pruning.channel_bars,
    "FlipGallery": pruning.flip_gallery,
    "ExtremeSamples": ntk.extreme_samples_figure,
    "FourierContent": ntk.fourier_figure,
    "LayerKernels": ntk.layer_kernels_figure,
    "TargetPowerTrajectory": ntk.target_power_trajectory_figure,
    "EmbeddingFrames": geometry.embedding_animation,
    "WidthProbe": levelset.width_profile,
    "ConfidenceMap": levelset.path_on_map,
    "LazyMeasures": lambda r: lazy.measures_figure({"run": r}),
    "PhaseDiagram": lambda r: lazy.phase_heatmap(r.weight_change, r.alphas, r.widths, label="relative weight change",
                                                 log=True),
    "History": training.training_curves,
    "DecisionRegions": predictions.prediction_figure,
    "FunctionFit": predictions.prediction_figure,
    "Confusion": predictions.prediction_figure,
    "Parity": predictions.prediction_figure,
}
# Parts of other results, never saved alone: no figure of their own.
NOT_DRAWN = {"Trajectory", "WeightChange", "SampleGallery"}


def load(path: Path):
    """The result saved in a .npz of `engine.results.to_npz_bytes` (read without pickle)."""
    with np.load(path, allow_pickle=False) as saved:
        arrays = {k: saved[k] for k in saved.files if k != "meta"}
        meta = json.loads(str(saved["meta"]))
    cls = getattr(results, meta.get("type", ""), None)
    if cls is None:
        raise ValueError(f"{path.name} does not hold a result this lab knows.")
    return results.from_arrays(cls, arrays, meta)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m viz", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="the HTML file (default: beside the .npz)")
    args = parser.parse_args(argv)
    try:
        result = load(args.file)
    except (OSError, ValueError) as exc:
        print(exc, file=sys.stderr)
        return 2
    figure = FIGURES.get(type(result).__name__)
    if figure is None:
        print(f"There is no figure for a {type(result).__name__} yet.", file=sys.stderr)
        return 2
    out = args.out or args.file.with_suffix(".html")
    out.write_text(figure(result).to_html(include_plotlyjs=True, full_html=True))
    print(f"Wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
