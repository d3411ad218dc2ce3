"""The main job: BYOL and CO-BYOL pre-trained on the embedded digits, compared with a randomly
initialised encoder of the same architecture by offline linear probe and weighted kNN.

Re-running it resumes or reuses finished runs, so an interrupted demo loses no work.
"""

from __future__ import annotations

import csv
import json
import time
from importlib import resources
from pathlib import Path

import torch

from .checkpoint import load_pretrained
from .config import Config, apply_overrides, load_config
from .evaluate import evaluate_encoder
from .methods import build_encoder
from .trainer import pretrain, resolve_runtime, seed_everything, setup_logging

METHODS = ("byol", "co_byol")


def demo_config() -> Config:
    path = resources.files("cossl_train") / "configs" / "demo_digits.yaml"
    with resources.as_file(path) as p:
        return load_config(p)


def format_table(rows: list[dict]) -> str:
    lines = ["| encoder | offline linear top-1 (%) | offline linear top-5 (%) | kNN top-1 (%) | pre-training (s) |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['encoder']} | {r['linear_top1']:.2f} | {r['linear_top5']:.2f} | {r['knn_top1']:.2f} | "
                     f"{r['pretrain_s']:.0f} |")
    return "\n".join(lines)


def run_demo(out_dir: str | Path = "runs/demo", epochs: int | None = None, progress: bool = True,
             overrides: tuple[str, ...] = ()) -> list[dict]:
    out_dir = Path(out_dir)
    setup_logging(out_dir)
    base = demo_config()
    extra = list(overrides) + ([f"train.epochs={epochs}"] if epochs is not None else [])
    base = apply_overrides(base, extra)
    device = resolve_runtime(base).device
    rows = []
    t_all = time.perf_counter()

    seed_everything(base.train.seed)
    random_encoder = build_encoder(base).to(device)
    res = evaluate_encoder(random_encoder, base, device=device, progress=progress)
    rows.append({"encoder": "random init", **_scores(res), "pretrain_s": 0.0})

    for name in METHODS:
        cfg = apply_overrides(base, [f"method.name={name}", f"train.out_dir={out_dir / name}"])
        t0 = time.perf_counter()
        pretrain(cfg, resume=True, progress=progress)  # resumes, or returns at once when finished
        took = time.perf_counter() - t0
        pre = load_pretrained(Path(cfg.train.out_dir) / "checkpoint.pt", device=device)
        res = evaluate_encoder(pre.encoder, cfg, device=device, progress=progress)
        torch.save({"probe": res["probe"].state_dict()}, Path(cfg.train.out_dir) / "checkpoint.probe.pt")
        rows.append({"encoder": name, **_scores(res), "pretrain_s": took})

    table = format_table(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.md").write_text(table + "\n")
    (out_dir / "results.json").write_text(json.dumps(rows, indent=2))
    with open(out_dir / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"\nDemo on the embedded digits ({base.backbone.name}, width {base.backbone.width}, "
          f"{base.augment.resolution} px, {base.train.epochs} epochs), evaluated on the held-out split:\n")
    print(table)
    print(f"\nwall time {time.perf_counter() - t_all:.0f} s; results, checkpoints and metrics in {out_dir}/")
    return rows


def _scores(res: dict) -> dict:
    return {"linear_top1": res["linear_top1"], "linear_top5": res["linear_top5"], "knn_top1": res["knn_top1"]}
