#!/usr/bin/env python
"""Evaluate a model on the benchmarks: `python scripts/evaluate.py --model <folder> --benchmarks ade150 --root datasets`.

The same as `fgaseg evaluate`; runs under `accelerate launch` / `torchrun` (each process takes a share of the images)."""

import sys

from fgaseg_hf.evaluation import main

if __name__ == "__main__":
    sys.exit(main())
