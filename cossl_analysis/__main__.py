"""``python -m cossl_analysis``: the same command line as ``cossl-analysis``."""

import sys

from cossl_analysis.cli import main

if __name__ == "__main__":  # guarded: spawned worker processes re-import the main module
    sys.exit(main())
