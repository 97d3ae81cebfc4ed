"""The converter of original detectron2 checkpoints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
import yaml

from conftest import PARITY_FIXTURES

from fgaseg_hf import FGASegModel
from fgaseg_hf.conversion import ConversionError, convert_original_checkpoint, read_original_config

REPO = Path(__file__).resolve().parents[1]
FIXTURE = PARITY_FIXTURES / "fast_cat"
CHECKPOINT, CONFIG = FIXTURE / "checkpoint.pth", FIXTURE / "config.json"


@pytest.fixture(scope="module")
def original_state():
    return torch.load(CHECKPOINT, map_location="cpu", weights_only=True)


def _write_checkpoint(tmp_path, state) -> str:
    path = tmp_path / "model_final.pth"
    torch.save({"model": state, "iteration": 0}, path)
    return str(path)


def test_yaml_with_base_gives_the_same_model_as_json(tmp_path):
    """A detectron2 YAML pair (`_BASE_`) with the fixture's values converts to the same weights and config."""
    cfg = json.loads(CONFIG.read_text())
    head = dict(cfg["MODEL.SEM_SEG_HEAD"])
    base = {"MODEL": {"SEM_SEG_HEAD": {k: head[k] for k in ("NUM_HEADS", "POOLING_SIZES", "WINDOW_SIZES")}}}
    child = {
        "_BASE_": "base.yaml",
        "MODEL": {
            "SEM_SEG_HEAD": {k: v for k, v in head.items() if k not in ("NUM_HEADS", "POOLING_SIZES", "WINDOW_SIZES")},
            "PROMPT_ENSEMBLE_TYPE": "single",
        },
    }
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "child.yaml").write_text(yaml.safe_dump(child))
    flat = read_original_config(str(tmp_path / "child.yaml"))
    assert flat["MODEL.SEM_SEG_HEAD.NUM_HEADS"] == 4 and flat["MODEL.SEM_SEG_HEAD.DECODER_MOD"] == "fast"
    # No `derived`/`clip` block in a YAML: the original's defaults apply (heads = width // 64 would be 0 for the
    # tiny fixture, so the JSON's clip block is needed there; compare the head config only).
    from_json = convert_original_checkpoint(str(CHECKPOINT), str(CONFIG))
    from fgaseg_hf.conversion import infer_config, load_original_checkpoint

    config = infer_config(load_original_checkpoint(str(CHECKPOINT)), flat)
    for key in ("hidden_dim", "num_attention_heads", "pooling_size", "window_size", "decoder_mode", "fusion_mode",
                "decoder_dims", "decoder_guidance_dims", "local_alignment_kernel_size", "class_aggregation_length",
                "inference_top_k", "guidance_layer_indexes", "image_size", "auxiliary_loss_weights"):
        assert getattr(config, key) == getattr(from_json.config, key), key


def test_unknown_missing_and_misshaped_keys_are_named(tmp_path, original_state):
    state = dict(original_state["model"])
    state["sem_seg_head.predictor.transformer.extra_layer.weight"] = torch.zeros(3)
    with pytest.raises(ConversionError, match="extra_layer.weight"):
        convert_original_checkpoint(_write_checkpoint(tmp_path, state), str(CONFIG))

    state = dict(original_state["model"])
    del state["sem_seg_head.predictor.transformer.head_auxi_1.bias"]
    with pytest.raises(ConversionError, match=r"missing from the checkpoint: \['decoder.aux_head1.bias'\]"):
        convert_original_checkpoint(_write_checkpoint(tmp_path, state), str(CONFIG))

    state = dict(original_state["model"])
    state["sem_seg_head.predictor.transformer.decoder1.up.bias"] = torch.zeros(5)
    with pytest.raises(ConversionError, match=r"mis-shaped: \['decoder.decoder1.up.bias: checkpoint \(5,\)"):
        convert_original_checkpoint(_write_checkpoint(tmp_path, state), str(CONFIG))

    with pytest.raises(ConversionError, match="not an FGA-Seg checkpoint"):
        convert_original_checkpoint(_write_checkpoint(tmp_path, {"backbone.conv.weight": torch.zeros(2)}), str(CONFIG))


def test_template_count_must_match_the_checkpoint(tmp_path):
    cfg = json.loads(CONFIG.read_text())
    cfg["MODEL.PROMPT_ENSEMBLE_TYPE"] = "imagenet_select"
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ConversionError, match="takes 1 template channel.* has 8 templates"):
        convert_original_checkpoint(str(CHECKPOINT), str(tmp_path / "cfg.json"))


def test_script_writes_a_loadable_folder_with_a_default_vocabulary(tmp_path):
    names = ["wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed ", "windowpane", "grass", "cabinet",
             "sidewalk", "person", "earth", "door", "chest of drawers, chest, bureau, dresser", "mountain", "potted plant"]
    (tmp_path / "names.json").write_text(json.dumps(names))
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "convert_original_checkpoint.py"), "--checkpoint", str(CHECKPOINT),
         "--config", str(CONFIG), "--output", str(tmp_path / "out"), "--class-names", str(tmp_path / "names.json")],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    model = FGASegModel.from_pretrained(tmp_path / "out").eval()
    assert model.config.id2label[15] == "chest of drawers, chest, bureau, dresser"
    # The stored prompt tokens are the original's (up to its end-of-text token).
    reference = torch.load(FIXTURE / "inputs.pt", weights_only=False)["token_ids"]
    ours = model.default_input_ids
    for row in range(len(reference)):
        end = int((reference[row] == 49407).nonzero()[0])
        assert torch.equal(ours[row, : end + 1], reference[row, : end + 1])
    expected = torch.load(FIXTURE / "outputs.pt", weights_only=False)["eval"]["img_384x384"]["intermediates"]["text_embeds"]
    assert (model.default_text_embeddings() - expected).abs().max() <= 1e-5
    # The folder carries a processor with CLIP's tokenizer: the pipeline runs on it with the stored vocabulary.
    from transformers import pipeline

    image = torch.load(FIXTURE / "inputs.pt", weights_only=False)["eval"]["img_312x424"]["image"]
    segments = pipeline("image-segmentation", model=str(tmp_path / "out"))(Image.fromarray(image.permute(1, 2, 0).numpy()))
    assert segments and {s["label"] for s in segments} <= set(names)
    assert segments[0]["mask"].size == (424, 312)

    bad = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "convert_original_checkpoint.py"), "--checkpoint", str(tmp_path / "nope.pth"),
         "--config", str(CONFIG), "--output", str(tmp_path / "x")],
        capture_output=True, text=True,
    )
    assert bad.returncode == 2 and bad.stderr.strip() == f"error: checkpoint not found: {tmp_path / 'nope.pth'}"
    assert not (tmp_path / "x").exists()

    missing_names = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "convert_original_checkpoint.py"), "--checkpoint", str(CHECKPOINT),
         "--config", str(CONFIG), "--output", str(tmp_path / "y"), "--class-names", str(tmp_path / "absent.json")],
        capture_output=True, text=True,
    )
    assert missing_names.returncode == 2 and missing_names.stderr.count("\n") == 1
    assert missing_names.stderr.startswith("error: [Errno 2] No such file or directory") and "absent.json" in missing_names.stderr
    assert not (tmp_path / "y").exists()
