"""Timing of the analyses: ``python -m cossl_analysis.bench [--help]``.

Prints, in one run:
* ``erf_map`` for all positions of the 7x7 map of a randomly initialised torchvision ResNet-50
  (children up to layer4) at 224 px: the batched path (B*P copies in chunks, one captum call per
  chunk) against the position-by-position path (one captum call per position over the images), and
  the largest difference between their maps;
* images/s of the similarity analysis and of the patch-dropping analysis (end to end, forward included),
  and of the similarity statistics alone on precomputed features.

Every pass of the ERF is one forward + backward, so the cost is linear in the number of positions
(and on CPU a ResNet-50 pass at 224 px takes seconds). ``--positions-measured K`` times only the first
K of the h*w positions and extrapolates both paths linearly to all of them (printed as such).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import torch
import torchvision
from torch import nn

from cossl_analysis.erf import erf_map
from cossl_analysis.patch_drop import patch_drop_analysis
from cossl_analysis.similarity import extract_features, similarity_analysis, similarity_from_features

T = TypeVar("T")


def resnet50_trunk() -> nn.Module:
    """Randomly initialised ResNet-50 up to layer4: (B, 3, 224, 224) -> (B, 2048, 7, 7)."""
    net = torchvision.models.resnet50(weights=None)
    return nn.Sequential(*list(net.children())[:-2]).eval()


def _timed(fn: Callable[[], T]) -> tuple[T, float]:
    """(fn(), wall-clock seconds)."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224, help="image side in pixels (224 -> 7x7 map)")
    parser.add_argument("--images", type=int, default=1, help="images for the ERF timing")
    parser.add_argument("--chunk", type=int, default=8, help="erf_map chunk_size (copies per pass)")
    # Default 14 (two rows of the 7x7 map) keeps the run near 1.5 min on 2 CPU cores; passes are
    # independent and equally costly, so the linear extrapolation is sound (0 = time all positions).
    parser.add_argument("--positions-measured", type=int, default=14,
                        help="time only the first K positions and extrapolate to all (0 = all)")
    parser.add_argument("--analysis-images", type=int, default=8,
                        help="images for the similarity / patch-dropping timings")
    parser.add_argument("--batch-size", type=int, default=8, help="forward batch of those analyses")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    model = resnet50_trunk().to(device)
    images = torch.rand(args.images, 3, args.size, args.size)
    with torch.no_grad():
        _, _, h, w = model(images[:1].to(device)).shape  # also warms up the kernels
    grid = [(i / max(h - 1, 1), j / max(w - 1, 1)) for i in range(h) for j in range(w)]
    n_meas = len(grid) if args.positions_measured <= 0 else min(args.positions_measured, len(grid))
    scale = len(grid) / n_meas
    print(f"device={device} threads={torch.get_num_threads()} model=resnet50[:layer4] size={args.size} "
          f"map={h}x{w} images={args.images} chunk={args.chunk}")
    print(f"ERF: {len(grid)} positions, timing {n_meas}"
          + ("" if scale == 1 else f" and extrapolating x{scale:.2f}"))

    batched, t_b = _timed(lambda: erf_map(model, images, grid[:n_meas], average=False,
                                          batch_positions=True, chunk_size=args.chunk, progress=True))
    looped, t_l = _timed(lambda: erf_map(model, images, grid[:n_meas], average=False,
                                         batch_positions=False, chunk_size=args.images, progress=True))
    diff = float(np.abs(batched - looped).max() / max(np.abs(looped).max(), 1e-30))
    per = args.images * n_meas
    print(f"  batched (chunks of {args.chunk} image-position copies): {t_b * scale:8.1f} s for all positions "
          f"({t_b / per:.3f} s per image-position)")
    print(f"  position-by-position (one call per position):  {t_l * scale:8.1f} s for all positions "
          f"({t_l / per:.3f} s per image-position)")
    print(f"  speed-up {t_l / t_b:.2f}x; max |batched - looped| / max|looped| = {diff:.2e}")

    data = torch.rand(args.analysis_images, 3, args.size, args.size)
    n = args.analysis_images
    sim, t_sim = _timed(lambda: similarity_analysis(model, data, batch_size=args.batch_size))
    feats, t_feat = _timed(lambda: extract_features(model, data, batch_size=args.batch_size))
    _, t_stats = _timed(lambda: similarity_from_features(*feats))
    _, t_drop = _timed(lambda: patch_drop_analysis(model, data, batch_size=args.batch_size))
    print(f"similarity (random mode), {n} images, {len(sim.pairs)} pairs: {n / t_sim:8.2f} images/s end to end "
          f"(features {t_feat:.1f} s; statistics alone {t_stats * 1e3:.1f} ms)")
    print(f"patch dropping (7 fractions, random): {n / t_drop:8.2f} images/s end to end")


if __name__ == "__main__":
    main()
