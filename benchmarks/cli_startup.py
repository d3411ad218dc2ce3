"""How long ``cossl-analysis`` takes to answer ``--help`` and a bad command line, each in a fresh
interpreter (what a user waits for), beside ``import torch`` alone for scale. Prints seconds, the
median of ``--repeats`` runs.

    python benchmarks/cli_startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence

#: (what, python -c code)
CASES = (
    ("cossl-analysis --help", "from cossl_analysis.cli import main; main(['--help'])"),
    ("cossl-analysis report --help", "from cossl_analysis.cli import main; main(['report', '--help'])"),
    ("cossl-analysis erf (no --out: an argument error)", "from cossl_analysis.cli import main; main(['erf', 'x.pt'])"),
    ("cossl-analysis erf x.pt --out o images=-1 (a bad setting)",
     "from cossl_analysis.cli import main; main(['erf', 'x.pt', '--out', 'o', 'images=-1'])"),
    ("import torch (for scale)", "import torch"),
)


def seconds(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], capture_output=True, check=False)
    return time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    for what, code in CASES:
        times = [seconds(code) for _ in range(args.repeats)]
        print(f"{what}: {statistics.median(times):.2f} s (median of {args.repeats}; min {min(times):.2f} s)")


if __name__ == "__main__":
    main()
