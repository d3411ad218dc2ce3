"""CO-SimCLR in a plain PyTorch loop: a torchvision ResNet-18 trunk on the embedded digit scenes.

    python examples/own_loop.py                # 60 steps at 64 px, a few minutes on 2 CPU cores
    python examples/own_loop.py --steps 12 --size 48 --batch-size 16

What CO-SSL adds to a SimCLR loop is marked "CO:": a local projector applied at every position of
the feature map, and CoLoss, which mixes SimCLR's loss with the local term,
L = (1 - w_s) L_SimCLR + w_s L_local. Nothing is downloaded: the images are generated in memory.
"""

from __future__ import annotations

import argparse

import torch
import torchvision
import torchvision.transforms.v2 as T

from cossl_train import MLP, CoLoss, PerPosition, SimCLRLoss, feature_map
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
    images = digit_scenes("train", side=args.size)[0][: args.images]  # uint8 (N, 3, size, size)
    augment = T.Compose([T.RandomResizedCrop(args.size, scale=(0.2, 1.0)), T.RandomHorizontalFlip(),
                         T.ColorJitter(0.4, 0.4), T.ToDtype(torch.float32, scale=True),
                         T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])

    backbone = feature_map(torchvision.models.resnet18())  # the map before pooling: (B, 512, h, w)
    projector = MLP(512, 512, 128)  # SimCLR's projection head
    local_projector = PerPosition(MLP(512, 512, 128))  # CO: a projection head at every position
    criterion = CoLoss(SimCLRLoss(temperature=0.2), local_weight=args.local_weight)  # CO
    params = [*backbone.parameters(), *projector.parameters(), *local_projector.parameters()]
    optimizer = torch.optim.AdamW(params, lr=2e-3, weight_decay=1e-4)

    losses = []
    for step in range(args.steps):
        batch = images[torch.randint(len(images), (args.batch_size,))]
        views = [torch.stack([augment(image) for image in batch]) for _ in range(2)]
        fmaps = [backbone(v) for v in views]  # (B, 512, h, w)
        z = [projector(f.mean(dim=(2, 3))) for f in fmaps]  # global embeddings (B, 128)
        local = [local_projector(f) for f in fmaps]  # CO: local embeddings (B, h*w, 128)
        out = criterion(z, local_queries=local)  # SimCLR's targets are its own embeddings
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
        print(f"step {step + 1:3d}  loss {out.loss.item():.3f}  (SimCLR {out.global_loss.item():.3f}, "
              f"local {out.local_loss.item():.3f})", flush=True)

    k = max(1, args.steps // 4)
    print(f"mean loss of the first {k} steps {sum(losses[:k]) / k:.3f}, of the last {k} steps "
          f"{sum(losses[-k:]) / k:.3f}")


if __name__ == "__main__":
    main()
