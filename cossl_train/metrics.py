"""Training metrics to JSONL (every logged step), CSV (one row per epoch) and TensorBoard."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("cossl_train")


class MetricsLogger:
    """Appends to ``metrics.jsonl`` and ``epochs.csv`` in ``out_dir`` (so a resumed run keeps
    its history) and mirrors scalars to TensorBoard when available."""

    def __init__(self, out_dir: str | Path, tensorboard: bool = True, enabled: bool = True) -> None:
        self.out_dir = Path(out_dir)
        self.enabled = enabled
        self.tb = None
        if not enabled:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(self.out_dir / "tensorboard"))
            except ImportError as e:  # tensorboard is a dependency, but never fail training over it
                log.warning("TensorBoard logging off: %s", e)

    def log_step(self, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.out_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(f"train/{k}", v, step)

    def log_epoch(self, epoch: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        path = self.out_dir / "epochs.csv"
        row = {"epoch": epoch, **values}
        new = not path.exists()
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(f"epoch/{k}", v, epoch)
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
