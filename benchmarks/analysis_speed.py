"""Timing of the analyses: ``erf_map``'s paths (one forward pass per chunk of images with vectorised,
looped or measured backward passes, against a forward and backward pass per position) on all 49
positions of a 7x7 map, then the similarity and patch-dropping throughput (docs/benchmarks.md).
``python -m benchmarks.analysis_speed [--help]`` from the repository root."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import torch
import torchvision
from torch import nn

from cossl_analysis.analyses.erf import erf_map
from cossl_analysis.analyses.features import representations
from cossl_analysis.analyses.patch_drop import patch_drop_analysis
from cossl_analysis.analyses.similarity import similarity_analysis, similarity_from_features

T = TypeVar("T")


def resnet50_trunk() -> nn.Module:
    """Randomly initialised ResNet-50 up to layer4: (B, 3, 224, 224) -> (B, 2048, 7, 7)."""
    net = torchvision.models.resnet50(weights=None)
    return nn.Sequential(*list(net.children())[:-2]).eval()


def small_convnet() -> nn.Module:
    """Three stride-2 convolutions with BatchNorm and ReLU: (B, 3, 56, 56) -> (B, 64, 7, 7)."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 64, 3, 2, 1),
    ).eval()


def five_layer_convnet() -> nn.Module:
    """Five stride-2 3x3 convolutions (16 to 256 channels) with BatchNorm and ReLU between them:
    (B, 3, 224, 224) -> (B, 256, 7, 7); cheap layers at high resolution, so the backward passes
    weigh most."""
    layers: list[nn.Module] = []
    c = 3
    for w in (16, 32, 64, 128, 256):
        layers += [nn.Conv2d(c, w, 3, 2, 1), nn.BatchNorm2d(w), nn.ReLU()]
        c = w
    return nn.Sequential(*layers[:-2]).eval()


def _timed(fn: Callable[[], T]) -> tuple[T, float]:
    """(fn(), wall-clock seconds)."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


#: erf_map's paths, in the order they are timed; speed-ups are against per-position
ERF_PATHS = ("per-position", "batched", "looped", "auto")


def bench_erf(name: str, model: nn.Module, images: torch.Tensor, measured: int, chunk: int, repeats: int) -> None:
    """Print the time of every ``erf_map`` path (:data:`ERF_PATHS`) on every position of the
    model's map, and each speed-up over per-position.

    Every path first runs once on two positions (kernel selection, allocator and vmap warm-up are not
    timed), then ``repeats`` times, the paths interleaved; the fastest run of each counts (the machine
    is shared, so the minimum is the least disturbed measurement)."""
    with torch.no_grad():
        _, _, h, w = model(images[:1]).shape
    grid = [(i / max(h - 1, 1), j / max(w - 1, 1)) for i in range(h) for j in range(w)]
    n_meas = len(grid) if measured <= 0 else min(measured, len(grid))
    scale = len(grid) / n_meas
    runs = {path: (lambda pos, path=path: erf_map(model, images, pos, average=False, method=path,
                                                  chunk_size=len(images) if path == "per-position" else chunk))
            for path in ERF_PATHS}
    for run in runs.values():
        run(grid[:2])
    times: dict[str, list[float]] = {k: [] for k in runs}
    maps: dict[str, np.ndarray] = {}
    for _ in range(repeats):
        for key, run in runs.items():
            maps[key], seconds = _timed(lambda run=run: run(grid[:n_meas]))
            times[key].append(seconds)
    looped = maps["per-position"]
    best = {k: min(v) for k, v in times.items()}
    diff = max(float(np.abs(m - looped).max() / max(np.abs(looped).max(), 1e-30)) for m in maps.values())
    timed = "" if scale == 1 else f", {n_meas} timed and extrapolated x{scale:.2f}"
    paths = ", ".join(f"{k} {best[k] * scale:.2f} s" + ("" if k == "per-position" else
                                                         f" ({best['per-position'] / best[k]:.2f}x)")
                      for k in ERF_PATHS)
    print(f"ERF {name}: {len(grid)} positions ({h}x{w}) x {len(images)} images{timed}, chunk {chunk}: {paths}; "
          f"max |path - per-position| / max = {diff:.1e}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.analysis_speed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224, help="ResNet-50 image side in pixels (224 -> 7x7 map)")
    parser.add_argument("--images", type=int, default=1, help="images for the ResNet-50 ERF timing")
    parser.add_argument("--small-images", type=int, default=4, help="images for the small conv net ERF timing")
    parser.add_argument("--conv5-images", type=int, default=2, help="images for the 5-layer conv net ERF timing")
    parser.add_argument("--chunk", type=int, default=16, help="erf_map chunk_size ((image, position) copies per pass)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each ERF path (the fastest counts)")
    # Default 7 (one row of the 7x7 map) keeps the run near a minute on 2 CPU cores.
    parser.add_argument("--positions-measured", type=int, default=7,
                        help="ResNet-50: time only the first K positions and extrapolate to all (0 = all)")
    parser.add_argument("--analysis-images", type=int, default=8,
                        help="images for the similarity / patch-dropping timings")
    parser.add_argument("--batch-size", type=int, default=8, help="forward batch of those analyses")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    print(f"device=cpu threads={torch.get_num_threads()} torch={torch.__version__}")
    bench_erf("small conv net, 56 px", small_convnet(), torch.rand(args.small_images, 3, 56, 56), 0, args.chunk,
              args.repeats)
    bench_erf(f"5-layer conv net, {args.size} px", five_layer_convnet(),
              torch.rand(args.conv5_images, 3, args.size, args.size), 0, args.chunk, args.repeats)
    model = resnet50_trunk()
    bench_erf(f"ResNet-50, {args.size} px", model, torch.rand(args.images, 3, args.size, args.size),
              args.positions_measured, args.chunk, args.repeats)

    data = torch.rand(args.analysis_images, 3, args.size, args.size)
    n = args.analysis_images
    sim, t_sim = _timed(lambda: similarity_analysis(model, data, batch_size=args.batch_size))
    feats, t_feat = _timed(lambda: representations(model, data, batch_size=args.batch_size))
    _, t_stats = _timed(lambda: similarity_from_features(*feats))
    _, t_drop = _timed(lambda: patch_drop_analysis(model, data, batch_size=args.batch_size))
    print(f"similarity (random mode), {n} images, {len(sim.pairs)} pairs: {n / t_sim:8.2f} images/s end to end "
          f"(features {t_feat:.1f} s; statistics alone {t_stats * 1e3:.1f} ms)")
    print(f"patch dropping (7 fractions, random): {n / t_drop:8.2f} images/s end to end")


if __name__ == "__main__":
    main()
