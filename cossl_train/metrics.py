"""Training metrics to JSONL (every logged step), CSV (one row per epoch) and TensorBoard."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

from . import jsonio
from .atomic import atomic_write_text

log = logging.getLogger("cossl_train")


def _csv_text(header: list[str], rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, restval="")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


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
            f.write(jsonio.dumps({"step": step, **values}) + "\n")
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(f"train/{k}", v, step)

    def log_epoch(self, epoch: int, values: dict[str, Any]) -> None:
        """Append one row to ``epochs.csv``. A column that first appears in a later epoch (kNN
        every k epochs, say) rewrites the file with the widened header, earlier rows left empty
        there, so every value stays under its own column."""
        if not self.enabled:
            return
        path = self.out_dir / "epochs.csv"
        row = {"epoch": epoch, **values}
        rows: list[dict[str, Any]] = []
        header: list[str] = []
        if path.exists():
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                header = list(reader.fieldnames or [])
                rows = list(reader)
        new_columns = [k for k in row if k not in header]
        if new_columns or not header:
            header += new_columns
            rows.append(row)
            atomic_write_text(path, _csv_text(header, rows))
        else:
            with open(path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=header).writerow(row)
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(f"epoch/{k}", v, epoch)
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
