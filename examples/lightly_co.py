"""lightly's SimCLR with the CO term added: lightly's backbone recipe, projection head, transform and
NTXentLoss, plus cossl's local head and CO loss, on the embedded digit scenes.

    pip install "cossl[interop]"   # lightly
    python examples/lightly_co.py --steps 12 --size 48 --batch-size 16

The lines marked "CO:" are all that changes in a lightly SimCLR loop: a local projection head (lightly's
own, applied at every position of the feature map) and CoLoss, which takes lightly's NTXentLoss as
L_g and adds the local term L_l in the same units (the same InfoNCE, the same temperature):
L = (1 - w_s) L_g + w_s L_l.
"""

from __future__ import annotations

import argparse

import torch
import torchvision
import torchvision.transforms.v2 as T
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from lightly.transforms import SimCLRTransform
from torch import nn

from cossl_train import CoLoss, PerPosition, SimCLRLoss
from cossl_train.data.scenes import digit_scenes


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--size", type=int, default=64, help="image side; ResNet-18's map is size/32 wide")
    parser.add_argument("--local-weight", type=float, default=0.3, help="w_s")
    parser.add_argument("--images", type=int, default=6000, help="train on the first N of the 6000 scenes")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.manual_seed(0)
    to_pil = T.ToPILImage()
    images = [to_pil(x) for x in digit_scenes("train", side=args.size)[0][: args.images]]
    transform = SimCLRTransform(input_size=args.size, min_scale=0.2, cj_strength=0.5, gaussian_blur=0.0)

    backbone = nn.Sequential(*list(torchvision.models.resnet18().children())[:-2])  # map before pooling
    projection_head = SimCLRProjectionHead(512, 512, 128)
    local_head = PerPosition(SimCLRProjectionHead(512, 512, 128))  # CO: lightly's head at every position
    ntxent = NTXentLoss(temperature=0.2)
    co = CoLoss(SimCLRLoss(temperature=0.2), local_weight=args.local_weight)  # CO: same temperature
    params = [*backbone.parameters(), *projection_head.parameters(), *local_head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=2e-3, weight_decay=1e-4)

    losses = []
    for step in range(args.steps):
        views = [transform(images[i]) for i in torch.randint(len(images), (args.batch_size,)).tolist()]
        x0, x1 = (torch.stack([v[k] for v in views]) for k in (0, 1))
        f0, f1 = backbone(x0), backbone(x1)  # (B, 512, h, w)
        z0, z1 = projection_head(f0.mean(dim=(2, 3))), projection_head(f1.mean(dim=(2, 3)))
        out = co([z0, z1], local_queries=[local_head(f0), local_head(f1)],  # CO
                 global_loss=ntxent(z0, z1))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
        print(f"step {step + 1:3d}  loss {out.loss.item():.3f}  (NTXentLoss {out.global_loss.item():.3f}, "
              f"local {out.local_loss.item():.3f})", flush=True)

    k = max(1, args.steps // 4)
    print(f"mean loss of the first {k} steps {sum(losses[:k]) / k:.3f}, of the last {k} steps "
          f"{sum(losses[-k:]) / k:.3f}")


if __name__ == "__main__":
    main()
