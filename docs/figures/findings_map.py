"""Figure and raw numbers of docs/findings.md from the map's `cossl-train compare` folders.

    python docs/figures/findings_map.py NAME=OUT[:REPORT] ...

OUT is a compare folder (its run folders), REPORT the folder holding its results.csv and report/
(default OUT); a cell is NAME followed by the sweep's combination, where there is one. Writes
findings_map.csv (one row per cell, method and seed; a run met twice is listed once) and
findings_map.png beside this file.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent
CHANCE_LOSS = 4.852  # ln 128: the local InfoNCE over a batch of 128
#: shorter names for the figure's axis
SHORT = (("co.local_weight=", "w_s "), ("co.shared_heads=false", "separate"), ("co.shared_heads=true", "shared"),
         ("co.local_targets=global_heads", "targets: global heads"), ("backbone.name=rf_resnet18_", ""))
COLUMNS = ["cell", "method", "seed", "linear_top1", "knn_top1", "local_loss", "local_retrieval", "own_cosine",
           "other_cosine", "global_retrieval", "pearson_c", "pearson_c_heads"]


def _rows(name: str, out: Path, report: Path) -> list[dict]:
    acc = {(r["encoder"], r["seed"]): r for r in csv.DictReader(open(report / "results.csv"))
           if r["encoder"] != "random init"}
    objective = json.loads((report / "report" / "co_objective" / "co_objective.json").read_text())
    rows = []
    for label, rec in objective.items():
        seed = re.search(r"seed=(\d+)", label).group(1)
        method = "co_simclr" if label.startswith("CO-") else "simclr"
        combo = label[label.find("(") + 1:label.rfind(")")] if "(" in label else ""
        run = out / combo.replace(", ", "__") / method / f"seed{seed}" if combo else out / method / f"seed{seed}"
        cell = f"{name}, {combo}" if combo else name
        summary = json.loads((run / "summary.json").read_text())
        o = rec["objective"]
        rows.append({"cell": cell, "method": method, "seed": seed,
                     "linear_top1": float(acc[(method, seed)]["linear_top1"]),
                     "knn_top1": float(acc[(method, seed)]["knn_top1"]),
                     "local_loss": summary.get("loss_local") if method == "co_simclr" else None,
                     "local_retrieval": 100 * o["retrieval"], "own_cosine": o["own_cosine"],
                     "other_cosine": o["other_cosine"], "global_retrieval": 100 * o["global_retrieval"],
                     "pearson_c": rec["backbone_pearson_c"], "pearson_c_heads": rec["heads_pearson_c"]})
    return rows


def _plot(rows: list[dict], path: Path) -> None:
    cells = list(dict.fromkeys(r["cell"] for r in rows))
    names = list(cells)
    for old, new in SHORT:
        names = [n.replace(old, new) for n in names]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 5))
    for i, cell in enumerate(cells):
        for method, dx, colour in (("simclr", -0.15, "tab:grey"), ("co_simclr", 0.15, "tab:red")):
            got = [r for r in rows if r["cell"] == cell and r["method"] == method]
            ax1.scatter([i + dx] * len(got), [r["local_retrieval"] for r in got], color=colour, s=18,
                        label=("SimCLR, global heads at every position" if method == "simclr"
                               else "CO-SimCLR, local heads") if i == 0 else None)
            if method == "co_simclr":
                ax2.scatter([i] * len(got), [CHANCE_LOSS - r["local_loss"] for r in got], color=colour, s=18)
    ax1.axhline(100 / 256, color="k", lw=0.8, ls="--", label="chance (1/256)")
    ax1.set_ylabel("local queries finding their own image (%)")
    ax2.set_ylabel("local loss below chance, ln 128 - loss (nats)")
    for ax in (ax1, ax2):
        ax.set_xticks(range(len(cells)), names, rotation=35, ha="right", fontsize=8)
        ax.set_ylim(bottom=0)
    ax1.legend(fontsize=8)
    ax1.set_title("the CO objective on 256 held-out images (3 seeds)\n"
                  "(SimCLR of '24 px' is the floor of every 24 px CO cell)", fontsize=10)
    ax2.set_title("the CO term's training loss, last epoch")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str]) -> None:
    rows: dict[tuple[str, str, str], dict] = {}
    for spec in argv:
        name, _, paths = spec.partition("=")
        out, _, report = paths.partition(":")
        for row in _rows(name, Path(out), Path(report or out)):
            rows.setdefault((row["cell"], row["method"], row["seed"]), row)
    with open(HERE / "findings_map.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows(rows.values())
    _plot(list(rows.values()), HERE / "findings_map.png")


if __name__ == "__main__":
    main(sys.argv[1:])
