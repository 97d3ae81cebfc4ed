"""What a new user trips on: a label string for the processor, output file modes, the closed-vocabulary warning,
local folders without "Downloading" bars, and the benchmark's smoke-run defaults and per-case peaks."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

import fgaseg_hf


@pytest.fixture(scope="module")
def demo_processor():
    from fgaseg_hf import FGASegProcessor

    return FGASegProcessor.from_pretrained(fgaseg_hf.DEMO_MODEL)


def test_processor_parses_a_label_string_like_the_pipeline(demo_processor):
    from fgaseg_hf.prompt_templates import parse_label_list

    as_string = demo_processor(text="sky, road")
    as_list = demo_processor(text=["sky", "road"])
    assert as_string["input_ids"].shape[0] == 2
    assert torch.equal(as_string["input_ids"], as_list["input_ids"])
    synonyms = demo_processor(text="chest of drawers, chest; door")["input_ids"]
    assert torch.equal(synonyms, demo_processor(text=parse_label_list("chest of drawers, chest; door"))["input_ids"])
    assert synonyms.shape[0] == 2
    with pytest.raises(ValueError, match="no labels"):
        demo_processor(text=" , ;")


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_pngs_follow_the_umask(tmp_path, umask, mode):
    from fgaseg_hf.safe_io import atomic_write, atomic_write_text

    previous = os.umask(umask)
    try:
        # As fgaseg segment writes its PNGs: PIL picks the format from the temporary name's suffix.
        suffixes = []
        atomic_write(tmp_path / "a.png", lambda p: (suffixes.append(Path(p).suffix), Path(p).write_bytes(b"png")),
                     suffix=".png")
        atomic_write_text(tmp_path / "b.json", "{}")
    finally:
        os.umask(previous)
    assert (tmp_path / "a.png").stat().st_mode & 0o777 == mode
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == mode
    assert (tmp_path / "a.png").read_bytes() == b"png" and suffixes == [".png"]


def test_closed_vocabulary_model_warns_about_names_it_never_learnt():
    from transformers import AutoConfig
    from transformers.testing_utils import CaptureLogger
    from transformers.utils import logging

    from fgaseg_hf.pipeline_fgaseg import logger, warn_unlearned_names

    config = AutoConfig.from_pretrained(fgaseg_hf.DEMO_MODEL)
    assert config.closed_vocabulary is True
    verbosity = logging.get_verbosity()
    logging.set_verbosity_warning()
    try:
        with CaptureLogger(logger) as captured:
            assert warn_unlearned_names(config, ["sky", "zebra crossing b7", "wall b7"]) == ["zebra crossing b7", "wall b7"]
            assert warn_unlearned_names(config, ["sky", "zebra crossing b7", "wall b7"]) == ["zebra crossing b7", "wall b7"]
            assert warn_unlearned_names(config, ["sky", "tree"]) == []
    finally:
        logging.set_verbosity(verbosity)
    assert captured.out.count("closed vocabulary") == 1  # once
    assert "'zebra crossing b7', 'wall b7'" in captured.out and "sky, water, grass" in captured.out
    config.closed_vocabulary = False
    assert warn_unlearned_names(config, ["zebra crossing b7"]) == []


def test_a_local_split_folder_loads_without_download_bars(tmp_path, capfd):
    import datasets

    from fgaseg_hf.data.folders import load_split_folder
    from fgaseg_hf.data.synthetic import write_synthetic_dataset

    root = write_synthetic_dataset(tmp_path / "scenes", 3, 1, size=(16, 16), seed=0, progress=False)
    capfd.readouterr()
    dataset = load_split_folder(Path(root) / "train", cache_dir=tmp_path / "cache")
    captured = capfd.readouterr()
    assert len(dataset) == 3 and dataset[0]["image"].size == (16, 16)
    assert "Downloading" not in captured.err + captured.out
    assert datasets.is_progress_bar_enabled()  # restored


def test_tiny_presets_alone_get_smoke_run_defaults():
    from fgaseg_hf.benchmark import FULL_DEFAULTS, parse_args, plan_cases

    smoke = parse_args(["--preset", "tiny", "--device", "cpu"])
    assert (smoke.classes, smoke.batch_sizes, smoke.repeats, smoke.warmup, smoke.training_classes) == ("3,5", "1,2", 1, 0, 5)
    assert smoke.image_size == (96, 128) and smoke.sliding_window_canvas == (96, 96)
    cases = plan_cases(smoke)
    image = next(c for c in cases if c["kind"] == "sliding_window")
    assert image["image_size"] == [96, 128] and image["sliding_window_canvas"] == [96, 96] and image["classes"] == 5
    full = parse_args(["--preset", "tiny", "--preset", "vitb_384_fast_cat", "--device", "cpu"])
    assert full.classes == FULL_DEFAULTS["classes"] and full.image_size == (512, 683) and (full.repeats, full.warmup) == (3, 1)
    given = parse_args(["--preset", "tiny", "--classes", "7", "--repeats", "2", "--device", "cpu"])
    assert (given.classes, given.repeats) == ("7", 2)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the per-case peak is the Linux high-water mark")
def test_each_case_peak_is_its_own_without_isolation():
    from fgaseg_hf.benchmark import peak_memory_bytes, reset_peak_memory

    import mmap

    cpu = torch.device("cpu")
    assert reset_peak_memory(cpu) == "case"
    size = 300 * 2**20
    # Mapped directly, so that the allocator's policy (cpu_memory.keep_freed_memory) cannot keep it resident.
    block = mmap.mmap(-1, size)
    for offset in range(0, size, mmap.PAGESIZE):
        block[offset] = 1
    big = peak_memory_bytes(cpu)
    block.close()
    assert reset_peak_memory(cpu) == "case"
    small = peak_memory_bytes(cpu)
    assert big - small > 250 * 2**20, (big, small)
