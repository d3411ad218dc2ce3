"""Global and local representations of a model, collected once for the analyses that read them.

For a model mapping images to a feature map z (B, C, h, w): the *local* representations are the
h * w positions of z (``local_features``: (B, P, C)); the *global* representation is what the
model pools z into (``pool_features``: the spatial mean, then the encoder's head when it has one).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from cossl_analysis._utils import Data, check_fmap, eval_mode, iter_batches, model_device, model_dtype, num_batches
from cossl_analysis.accuracy import pixels
from cossl_train.encoder import local_features, pool_features

__all__ = ["extract_features"]


@torch.no_grad()
def extract_features(
    model: nn.Module, images: Data, batch_size: int = 64, progress: bool = False
) -> tuple[Tensor, Tensor]:
    """Run the model in eval mode and collect (global (B, C), local (B, P, C)) float32 CPU tensors.

    ``images`` may be uint8 or float [0, 1]. Memory is B * P * C floats (e.g. 400 MB for 1000
    ResNet-50 images at 224 px): subsample first.
    """
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
