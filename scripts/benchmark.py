#!/usr/bin/env python
"""Speed and memory of FGA-Seg: `python scripts/benchmark.py --preset vitb_384_fast_cat --output benchmark.json`.

The same as `fgaseg benchmark`; see `fgaseg_hf.benchmark` for what is measured."""

import sys

from fgaseg_hf.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
