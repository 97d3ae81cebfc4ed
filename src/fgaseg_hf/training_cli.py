"""The argument parser of `fgaseg train`, apart from `training` so that help and argument errors answer without
importing torch and transformers."""

from __future__ import annotations

import argparse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fgaseg train", description="fine-tune FGA-Seg or ITA with transformers' Trainer")
    parser.add_argument("--config", required=True, help="run config (YAML or JSON) with model, data, augmentation, training")
    parser.add_argument("--output-dir", help="overrides training.output_dir")
    parser.add_argument("--resume", nargs="?", const=True, default=None,
                        help="resume from the last checkpoint in the output folder, or from the given checkpoint")
    parser.add_argument("--overwrite", action="store_true",
                        help="train into a non-empty output folder, first removing what an earlier run wrote there "
                        "(other files are kept)")
    parser.add_argument("--set", action="append", default=[], metavar="BLOCK.KEY=JSON",
                        help="override one config value, e.g. --set training.max_steps=10")
    return parser


__all__ = ["build_parser"]
