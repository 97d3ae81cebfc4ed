#!/usr/bin/env python
"""Fine-tune FGA-Seg with transformers' Trainer: `python scripts/train.py --config configs/train/<run>.yaml`.

The same as `fgaseg train`; runs under `torchrun --nproc_per_node N` and `accelerate launch` as well."""

import sys

from fgaseg_hf.training import main

if __name__ == "__main__":
    sys.exit(main())
