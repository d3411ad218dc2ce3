"""Global and local representations of a model, collected once for the analyses that read them:
the local ones are the h * w positions of the feature map z (``local_features``: (B, P, C)), the
global one what the model pools z into (``pool_features``: the spatial mean, then its head)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from cossl_analysis.analyses._common import (
    Data,
    check_fmap,
    check_model,
    iter_batches,
    model_device,
    model_dtype,
    num_batches,
)
from cossl_train.encoder import local_features, pool_features
from cossl_train.evaluate import eval_mode, pixels

__all__ = ["feature_map_size", "representations"]


@torch.no_grad()
def representations(model: nn.Module, images: Data, batch_size: int = 64,
                    progress: bool = False) -> tuple[Tensor, Tensor]:
    """(global (B, C), local (B, P, C)) float32 CPU tensors of uint8 or [0, 1] images, in eval
    mode. Memory is B * P * C floats (400 MB for 1000 ResNet-50 images at 224 px): subsample first."""
    check_model(model, images)
    device, dtype = model_device(model), model_dtype(model)
    glob: list[Tensor] = []
    loc: list[Tensor] = []
    with eval_mode(model):
        batches = iter_batches(images, batch_size=batch_size)
        total = num_batches(images, batch_size)
        for x, _ in tqdm(batches, desc="features", disable=not progress, leave=False, total=total):
            fmap = check_fmap(model(pixels(x, device, dtype)))
            glob.append(pool_features(model, fmap).float().cpu())
            loc.append(local_features(fmap).float().cpu())
    return torch.cat(glob), torch.cat(loc)


def feature_map_size(model: nn.Module, images: Tensor) -> tuple[int, int]:
    """(h, w) of the model's feature map on ``images`` (one forward pass of the first image)."""
    with eval_mode(model), torch.no_grad():
        fmap = check_fmap(model(pixels(images[:1], model_device(model), model_dtype(model))))
    return int(fmap.shape[2]), int(fmap.shape[3])
