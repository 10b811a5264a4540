"""``python -m ftcalc.executor SPEC --output-dir DIR``: ``ftcalc run`` alone, the entry point that torchrun,
``accelerate launch`` and emitted SkyPilot tasks start on each node (ftcalc/train/runner.py trains).
"""

import sys

from ftcalc.cli.train import run_main

if __name__ == "__main__":
    sys.exit(run_main())
