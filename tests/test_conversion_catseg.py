"""CAT-Seg conversion beyond the fixture's sizes, the unified `fgaseg convert` (architecture detection, trainer
state, refusals, `--from-hub` with a mocked download), and the saved folder's remote code."""

from __future__ import annotations

import json
import re

import pytest
import torch
from conftest import PARITY_FIXTURES, make_input_ids, run_without_package, tiny_clip_config, tiny_config

from fgaseg_hf.cli import main
from fgaseg_hf.configuration_catseg import CATSegConfig
from fgaseg_hf.conversion import ConversionError
from fgaseg_hf.conversion_auto import architecture_from_keys, convert_checkpoint, detect_architecture
from fgaseg_hf.modeling_catseg import CATSegModel

CATSEG = PARITY_FIXTURES / "catseg_b"
HEAD = "sem_seg_head.predictor."
CLIP = HEAD + "clip_model."


def tiny_catseg(seed=0, **overrides) -> CATSegModel:
    values = tiny_config().to_dict()
    for key in ("model_type", "transformers_version", "architectures"):
        values.pop(key, None)
    values.update(use_pixel_to_text_attention=False, use_local_alignment=False, use_alignment_projector=False,
                  decoder_mode="no_fast")
    values.update(overrides)
    torch.manual_seed(seed)
    model = CATSegModel(CATSegConfig(**values))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() > 1 and not name.startswith("clip.text_model.embeddings"):
                param.mul_(3.0)
            elif name.endswith(("padding_token", "padding_guidance")):
                param.normal_()
    return model.eval()


# ----------------------------------------------------------------------------- export under the original names
_HEAD_INVERSE = [
    (r"decoder\.layers\.(\d+)\.swin_block\.(block_\d)\.(q|k|v|proj)\.(.+)", r"transformer.layers.\1.swin_block.\2.attn.\3.\4"),
    (r"decoder\.layers\.(\d+)\.swin_block\.(.+)", r"transformer.layers.\1.swin_block.\2"),
    (r"decoder\.layers\.(\d+)\.class_attention\.(q|k|v)\.(.+)", r"transformer.layers.\1.attention.attention.\2.\3"),
    (r"decoder\.layers\.(\d+)\.class_attention\.mlp\.(.+)", r"transformer.layers.\1.attention.MLP.\2"),
    (r"decoder\.layers\.(\d+)\.class_attention\.padding_token", r"transformer.layers.\1.attention.padding_tokens"),
    (r"decoder\.layers\.(\d+)\.class_attention\.(.+)", r"transformer.layers.\1.attention.\2"),
    (r"decoder\.global_embed\.(.+)", r"transformer.conv1.\1"),
    (r"decoder\.appearance_guidance_projection\.(.+)", r"transformer.guidance_projection.0.\1"),
    (r"decoder\.text_guidance_projection\.(.+)", r"transformer.text_guidance_projection.0.\1"),
    (r"decoder\.decoder_guidance_projection\.(\d)\.(.+)", r"transformer.decoder_guidance_projection.\1.0.\2"),
    (r"decoder\.decoder(\d)\.up\.(.+)", r"transformer.decoder\1.up.\2"),
    (r"decoder\.decoder(\d)\.conv\.conv1\.(.+)", r"transformer.decoder\1.conv.double_conv.0.\2"),
    (r"decoder\.decoder(\d)\.conv\.norm1\.(.+)", r"transformer.decoder\1.conv.double_conv.1.\2"),
    (r"decoder\.decoder(\d)\.conv\.conv2\.(.+)", r"transformer.decoder\1.conv.double_conv.3.\2"),
    (r"decoder\.decoder(\d)\.conv\.norm2\.(.+)", r"transformer.decoder\1.conv.double_conv.4.\2"),
    (r"decoder\.head\.(.+)", r"transformer.head.\1"),
]
_CLIP_INVERSE = {
    "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
    "vision_model.embeddings.class_embedding": "visual.class_embedding",
    "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
    "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight", "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
    "vision_model.post_layernorm.weight": "visual.ln_post.weight", "vision_model.post_layernorm.bias": "visual.ln_post.bias",
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm.weight": "ln_final.weight", "text_model.final_layer_norm.bias": "ln_final.bias",
    "logit_scale": "logit_scale",
}
_BLOCK_INVERSE = {
    "self_attn.out_proj.weight": "attn.out_proj.weight", "self_attn.out_proj.bias": "attn.out_proj.bias",
    "layer_norm1.weight": "ln_1.weight", "layer_norm1.bias": "ln_1.bias", "layer_norm2.weight": "ln_2.weight",
    "layer_norm2.bias": "ln_2.bias", "mlp.fc1.weight": "mlp.c_fc.weight", "mlp.fc1.bias": "mlp.c_fc.bias",
    "mlp.fc2.weight": "mlp.c_proj.weight", "mlp.fc2.bias": "mlp.c_proj.bias",
    "self_attn.q_proj.weight": "attn.q_proj_weight", "self_attn.k_proj.weight": "attn.k_proj_weight",
    "self_attn.v_proj.weight": "attn.v_proj_weight",
}


def to_original(model: CATSegModel) -> dict:
    """A hand-built inverse of the converter: our state dict under the original CATSeg key names and layouts."""
    out, biases = {}, {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.clone()
        if name.startswith("clip."):
            rest = name[len("clip."):]
            block = re.match(r"(vision|text)_model\.encoder\.layers\.(\d+)\.(.+)", rest)
            if block:
                prefix = CLIP + ("visual." if block.group(1) == "vision" else "") + f"transformer.resblocks.{block.group(2)}."
                part = re.fullmatch(r"self_attn\.(q|k|v)_proj\.bias", block.group(3))
                if part:
                    biases.setdefault(prefix, {})[part.group(1)] = tensor
                else:
                    out[prefix + _BLOCK_INVERSE[block.group(3)]] = tensor
            elif rest == "visual_projection.weight":
                out[CLIP + "visual.proj"] = tensor.t().contiguous()
            elif rest == "text_projection.weight":
                out[CLIP + "text_projection"] = tensor.t().contiguous()
            elif rest in _CLIP_INVERSE:
                out[CLIP + _CLIP_INVERSE[rest]] = tensor
            else:
                assert rest.endswith("position_ids"), rest
            continue
        if name.startswith("guidance_upsample"):
            out[name.replace("guidance_upsample", "upsample")] = tensor
            continue
        for pattern, target in _HEAD_INVERSE:
            if re.fullmatch(pattern, name):
                original = HEAD + re.sub(pattern, target, name)
                if original.endswith(("padding_tokens", "padding_guidance")):
                    tensor = tensor.view(1, 1, -1)
                out[original] = tensor
                break
        else:
            raise AssertionError(f"no original name for {name}")
    for prefix, parts in biases.items():
        out[prefix + "attn.in_proj_bias"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out


def original_cfg(model: CATSegModel) -> dict:
    config = model.config
    head = "MODEL.SEM_SEG_HEAD."
    return {
        "MODEL.META_ARCHITECTURE": "CATSeg",
        head + "NUM_HEADS": config.num_attention_heads, head + "POOLING_SIZES": config.pooling_size,
        head + "WINDOW_SIZES": config.window_size, head + "ATTENTION_TYPE": config.class_attention_type,
        "MODEL.PROMPT_ENSEMBLE_TYPE": config.prompt_templates,
        "derived": {"clip_resolution": [config.clip_resolution] * 2, "clip_layer_indexes": config.guidance_layers,
                    "pad_len": config.class_aggregation_length},
        "clip": {"vision_heads": config.clip_config.vision_config.num_attention_heads,
                 "transformer_heads": config.clip_config.text_config.num_attention_heads},
    }


SIZES = [
    dict(),  # conftest's tiny sizes: 4 vision blocks, hidden 32, 2 aggregation layers, one template
    dict(clip_config=tiny_clip_config(vision_layers=6), guidance_layer_indexes=[1, 3], hidden_dim=48,
         decoder_dims=[32, 16], decoder_guidance_dims=[24, 16], decoder_guidance_proj_dims=[16, 8],
         text_guidance_proj_dim=8, appearance_guidance_proj_dim=24, num_aggregation_layers=3, num_attention_heads=4,
         pooling_size=[1, 1], class_attention_type="full", class_aggregation_length=4,
         prompt_templates=["a photo of a {}.", "a {} in the scene"]),
]


@pytest.mark.parametrize("overrides", SIZES, ids=["tiny", "other_widths"])
def test_round_trip_through_original_names_reproduces_the_model(tmp_path, overrides):
    source = tiny_catseg(**overrides)
    state = to_original(source)
    torch.save({"model": state, "iteration": 3}, tmp_path / "model.pth")
    (tmp_path / "cfg.json").write_text(json.dumps(original_cfg(source)))
    converted, architecture = convert_checkpoint(str(tmp_path / "model.pth"), str(tmp_path / "cfg.json"))
    assert architecture == "CATSeg" and type(converted) is CATSegModel
    for key in ("hidden_dim", "decoder_dims", "decoder_guidance_dims", "decoder_guidance_proj_dims",
                "num_aggregation_layers", "text_guidance_proj_dim", "appearance_guidance_proj_dim", "guidance_layers"):
        assert getattr(converted.config, key) == getattr(source.config, key), key
    ids = make_input_ids(6, num_templates=source.config.num_templates)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected, got = source(x, ids), converted(x, ids)
    assert torch.equal(expected.kept_classes, got.kept_classes)
    assert (expected.logits - got.logits).abs().max() <= 1e-6
    if source.config.class_aggregation_length:
        assert not bool(got.kept_classes.all()) or source.config.class_aggregation_length >= 6


def test_checkpoint_with_trainer_state_converts_the_same(tmp_path):
    source = tiny_catseg()
    state = to_original(source)
    (tmp_path / "cfg.json").write_text(json.dumps(original_cfg(source)))
    torch.save({"model": state}, tmp_path / "plain.pth")
    optimizer = {"state": {0: {"step": torch.tensor(5.0), "exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 1e-4, "params": [0]}]}
    torch.save({"model": state, "optimizer": optimizer, "scheduler": {"last_epoch": 5}, "iteration": 5}, tmp_path / "full.pth")
    plain, _ = convert_checkpoint(str(tmp_path / "plain.pth"), str(tmp_path / "cfg.json"))
    full, _ = convert_checkpoint(str(tmp_path / "full.pth"), str(tmp_path / "cfg.json"))
    for (name, a), (_, b) in zip(plain.state_dict().items(), full.state_dict().items()):
        assert torch.equal(a, b), name


# ----------------------------------------------------------------------------- detection
def _keys(*names):
    return {name: torch.zeros(1) for name in names}


def test_architecture_from_keys():
    catseg = _keys(CLIP + "visual.conv1.weight", HEAD + "transformer.conv1.weight")
    fgaseg = {**catseg, **_keys(HEAD + "DCDT.gamma_text", HEAD + "transformer.Local_align.txt.weight")}
    ita = _keys("backbone.clip_model.visual.trunk.stem.0.weight", HEAD + "query_feat.weight", "backbone.add_tgt_em.weight")
    fcclip = _keys("backbone.clip_model.visual.trunk.stem.0.weight", HEAD + "query_feat.weight")
    assert architecture_from_keys(catseg) == "CATSeg"
    assert architecture_from_keys(fgaseg) == "FGASeg"
    assert architecture_from_keys(ita) == "ITA"
    assert architecture_from_keys(fcclip) == "FCCLIP"
    assert architecture_from_keys(_keys("backbone.res2.0.weight")) is None
    # The cfg's name decides when present, and must agree with the keys.
    assert detect_architecture(catseg, {"MODEL.META_ARCHITECTURE": "CATSeg"}) == "CATSeg"
    assert detect_architecture(fcclip, {"MODEL.META_ARCHITECTURE": "FCCLIP"}) == "FCCLIP"
    assert detect_architecture(ita, {"MODEL.META_ARCHITECTURE": "FCCLIP"}) == "ITA"
    with pytest.raises(ConversionError, match="the cfg says FGA-Seg .* keys hold CAT-Seg"):
        detect_architecture(catseg, {"MODEL.META_ARCHITECTURE": "FGASeg"})
    with pytest.raises(ConversionError, match="'MaskFormer' is not one of"):
        detect_architecture(catseg, {"MODEL.META_ARCHITECTURE": "MaskFormer"})
    with pytest.raises(ConversionError, match="fit none of FGA-Seg, CAT-Seg, ITA, FC-CLIP .*backbone.res2.0.weight"):
        detect_architecture(_keys("backbone.res2.0.weight"), {})


def test_detection_without_a_meta_architecture_in_the_cfg(tmp_path):
    cfg = json.loads((CATSEG / "config.json").read_text())
    cfg.pop("MODEL.META_ARCHITECTURE")
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    model, architecture = convert_checkpoint(str(CATSEG / "checkpoint.pth"), str(tmp_path / "cfg.json"))
    assert architecture == "CATSeg" and model.config.model_type == "catseg"


# ----------------------------------------------------------------------------- the command
def test_convert_command_writes_a_catseg_folder_with_its_processor(tmp_path, capsys):
    out = tmp_path / "catseg"
    code = main(["convert", "--checkpoint", str(CATSEG / "checkpoint.pth"), "--config", str(CATSEG / "config.json"),
                 "--output", str(out)])
    assert code == 0, capsys.readouterr().err
    assert "CAT-Seg" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "catseg" and config["architectures"] == ["CATSegModel"]
    processor = json.loads((out / "processor_config.json").read_text())
    assert processor["image_processor"]["fast_decoder"] is False and (out / "tokenizer.json").is_file()
    # Nothing is overwritten: a second run into the same folder is refused in one line.
    code = main(["convert", "--checkpoint", str(CATSEG / "checkpoint.pth"), "--config", str(CATSEG / "config.json"),
                 "--output", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "not empty" in err and err.count("\n") == 1


def test_convert_command_refuses_what_it_cannot_convert(tmp_path, capsys):
    torch.save({"model": _keys("backbone.res2.0.weight", "sem_seg_head.predictor.class_embed.weight")}, tmp_path / "x.pth")
    (tmp_path / "cfg.json").write_text(json.dumps({"MODEL": {"META_ARCHITECTURE": "MaskFormer"}}))
    code = main(["convert", "--checkpoint", str(tmp_path / "x.pth"), "--config", str(tmp_path / "cfg.json"),
                 "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "'MaskFormer' is not one of FGASeg, CATSeg, FCCLIP" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
    code = main(["convert", "--output", str(tmp_path / "out")])
    assert code == 2 and "--from-hub" in capsys.readouterr().err


@pytest.mark.parametrize("name, filename", [("catseg-vitb", "model_base.pth"), ("catseg-vitl", "model_large.pth")])
def test_from_hub_downloads_the_published_file(tmp_path, monkeypatch, capsys, name, filename):
    import huggingface_hub

    calls = []
    checkpoint = CATSEG / "checkpoint.pth"
    if name == "catseg-vitl":
        # A tiny model of ViT-L/14's layout: patch 14, 24 x 24 tokens at 336 px, hooks on blocks 7 and 15 of 17+.
        clip = tiny_clip_config(vision_layers=17)
        clip.vision_config.patch_size, clip.vision_config.image_size = 14, 28
        model = tiny_catseg(clip_config=clip, image_size=336, window_size=12, guidance_layer_indexes=[7, 15])
        checkpoint = tmp_path / "large.pth"
        torch.save({"model": to_original(model)}, checkpoint)

    def fake_download(**kwargs):
        calls.append(kwargs)
        return str(checkpoint)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    code = main(["convert", "--from-hub", name, "--output", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
    assert calls == [{"repo_id": "hamacojr/CAT-Seg-weights", "filename": filename, "repo_type": "space"}]
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    # The preset's original cfg was used: its backbone's resolution and hooked blocks.
    assert config["model_type"] == "catseg"
    assert config["image_size"] == (384 if name == "catseg-vitb" else 336)


def test_from_hub_offline_says_what_to_download(tmp_path, monkeypatch, capsys):
    import huggingface_hub

    def offline(**kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    code = main(["convert", "--from-hub", "catseg-vitb", "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "https://huggingface.co/spaces/hamacojr/CAT-Seg-weights/blob/main/model_base.pth" in err
    assert not (tmp_path / "out").exists()


def test_saved_catseg_loads_as_remote_code_without_the_package(tmp_path):
    model = tiny_catseg()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    ids, x = make_input_ids(4), torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x, ids).logits
    torch.save({"ids": ids, "x": x}, tmp_path / "in.pt")
    script = f"""
import torch
from transformers import AutoModel
model = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
assert type(model).__name__ == "CATSegModel", type(model)
assert model.config.model_type == "catseg"
inputs = torch.load({str(tmp_path / "in.pt")!r})
with torch.no_grad():
    torch.save(model(inputs["x"], inputs["ids"]).logits, {str(tmp_path / "out.pt")!r})
"""
    run_without_package(script, tmp_path)
    assert torch.equal(torch.load(tmp_path / "out.pt"), expected)


def test_catseg_config_refuses_fgaseg_modules():
    with pytest.raises(ValueError, match="CATSegConfig.use_local_alignment must be False"):
        CATSegConfig(clip_config=tiny_clip_config(), use_local_alignment=True)


@pytest.mark.parametrize("file, preset, base, miou", [
    ("catseg-vitb16-384.md", "catseg_vitb_384", "openai/clip-vit-base-patch16", "31.8"),
    ("catseg-vitl14-336.md", "catseg_vitl_336", "openai/clip-vit-large-patch14-336", "37.9"),
])
def test_committed_catseg_cards_are_the_generators(file, preset, base, miou):
    from pathlib import Path

    from fgaseg_hf.model_card import parse_model_card, render_model_card

    committed = (Path(__file__).resolve().parents[1] / "model_cards" / file).read_text(encoding="utf-8")
    # No `license=`: CAT-Seg's default licence is MIT, that of its released weights.
    expected = render_model_card(preset, model_name=file[:-3], base_model=base)
    assert committed == expected, (
        f"model_cards/{file} is stale: python -m fgaseg_hf.model_card --preset {preset} --output model_cards/{file}"
    )
    metadata, body = parse_model_card(committed)
    assert metadata["license"] == "mit" and "catseg" in metadata["tags"] and "model-index" not in metadata
    assert f"| ADE20K (A-150) | {miou} | `ade150` |" in body and "Reported by CAT-Seg's authors" in body
    assert "fgaseg evaluate --model" in body and "@inproceedings{cho2024cat" in body
    assert f"fgaseg convert --from-hub {'catseg-vitb' if 'vitb' in file else 'catseg-vitl'}" in body


def test_sliding_window_crop_size_is_its_own_setting():
    """The original's 384 px crops for a 336 px model (ViT-L/14): 4 crops + the global view, each resized to 336,
    folded back at 384; `sliding_window_crop_size=336` gives the old crops of the model's resolution (3 x 3)."""
    import torch.nn.functional as F

    from fgaseg_hf.image_processing_fgaseg import FGASegImageProcessor

    proc = FGASegImageProcessor(image_size=336, processing_mode="original", do_sliding_window=True, fast_decoder=False)
    assert (proc.crop_size, proc._stride(), proc.num_views_per_image()) == (384, 256, 5)
    image = torch.randint(0, 256, (3, 200, 300), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    views = proc(image)["pixel_values"]
    assert views.shape == (5, 3, 336, 336)
    canvas = F.interpolate(image[None].float(), size=(640, 640), mode="bilinear", align_corners=False)
    crop = proc._normalise(canvas[0, :, 256:640, 0:384])  # the bottom-left crop
    expected = F.interpolate(crop[None], size=(336, 336), mode="bilinear", align_corners=False)[0]
    assert (views[2] - expected).abs().max() <= 1e-5
    # Folding: constant logits per view; a pixel covered by the top-left crop only averages it with the global view.
    logits = torch.arange(5, dtype=torch.float32).view(5, 1, 1, 1).expand(5, 1, 84, 84) - 2.0
    probs = proc.post_process_probabilities({"logits": logits}, target_sizes=[(640, 640)])[0]
    assert abs(float(probs[0, 10, 10]) - (torch.sigmoid(torch.tensor(-2.0)) + torch.sigmoid(torch.tensor(2.0))) / 2) <= 1e-6
    assert abs(float(probs[0, 300, 300]) - (torch.sigmoid(torch.arange(4.0) - 2).mean() + torch.sigmoid(torch.tensor(2.0))) / 2) <= 1e-6
    assert FGASegImageProcessor(image_size=336, sliding_window_crop_size=336).num_views_per_image() == 10
    with pytest.raises(ValueError, match="sliding_window_crop_size"):
        FGASegImageProcessor(image_size=336, do_sliding_window=True, sliding_window_crop_size=700)
