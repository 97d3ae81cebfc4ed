#!/usr/bin/env python
"""Raw benchmark downloads -> prepared layouts: `python scripts/prepare_benchmarks.py ade150 --root datasets
--archive ADEChallengeData2016.zip`. The same as `fgaseg prepare`."""

import sys

from fgaseg_hf.data.prepare import main

if __name__ == "__main__":
    sys.exit(main())
