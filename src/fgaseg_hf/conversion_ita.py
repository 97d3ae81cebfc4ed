"""Convert original ITA and FC-CLIP checkpoints (detectron2, open_clip) into `ITAModel` / `FCCLIPModel` folders.

* `convert_original_checkpoint`: an ITA or FC-CLIP detectron2 checkpoint (`{"model": state_dict}`, possibly with
  optimizer / trainer state beside it; original key names, frozen CLIP under `backbone.clip_model.*`) plus its
  config (a detectron2 YAML with `_BASE_` chain, or a JSON holding the cfg under "cfg" as in the parity fixtures).
  Both share META_ARCHITECTURE "FCCLIP"; `detect_architecture` tells them apart by the checkpoint's keys.
* `convert_open_clip_checkpoint`: an open_clip `convnext_large_d_320` state dict alone -> ITA with an untrained head.
Architecture sizes come from the tensor shapes (`head_architecture`, `clip_architecture`); what shapes cannot tell
(attention heads of the text tower, ensemble weights, loss settings, test-time resize) from the cfg.
"""

from __future__ import annotations

import json
import os
import re

import torch

from .configuration_fcclip import FCCLIPConfig
from .configuration_ita import ITAConfig, ita_preset_values
from .modeling_fcclip import FCCLIPModel
from .modeling_ita import ITAModel

CLIP_PREFIX = "backbone.clip_model."
PREDICTOR = "sem_seg_head.predictor."
PIXEL_DECODER = "sem_seg_head.pixel_decoder."
# What tells the two FCCLIP meta-architectures apart: ITA's text-query projection, FC-CLIP's decoder self-attention.
ITA_MARKER = "backbone.add_tgt_em.weight"
FCCLIP_MARKER = PREDICTOR + "transformer_self_attention_layers."
ARCHITECTURES = {"ita": (ITAConfig, ITAModel), "fcclip": (FCCLIPConfig, FCCLIPModel)}
# The original hard-codes ITA's 20 text queries and MSDeformAttn's 4 sampling points per level.
ITA_TEXT_QUERIES = 20
DEFORMABLE_POINTS = 4
# Derived buffers of the original that the port rebuilds from its config.
_DROPPED = ("criterion.empty_weight", "backbone.clip_model.attn_mask")

_CLIP_RULES = [
    (r"visual\.trunk\.stem\.0\.(.*)", r"clip.vision_model.embeddings.patch_embeddings.\1"),
    (r"visual\.trunk\.stem\.1\.(.*)", r"clip.vision_model.embeddings.layernorm.\1"),
    (r"visual\.trunk\.stages\.(\d+)\.downsample\.(\d)\.(.*)", r"clip.vision_model.encoder.stages.\1.downsampling_layer.\2.\3"),
    (r"visual\.trunk\.stages\.(\d+)\.blocks\.(\d+)\.conv_dw\.(.*)", r"clip.vision_model.encoder.stages.\1.layers.\2.dwconv.\3"),
    (r"visual\.trunk\.stages\.(\d+)\.blocks\.(\d+)\.norm\.(.*)", r"clip.vision_model.encoder.stages.\1.layers.\2.layernorm.\3"),
    (r"visual\.trunk\.stages\.(\d+)\.blocks\.(\d+)\.mlp\.fc1\.(.*)", r"clip.vision_model.encoder.stages.\1.layers.\2.pwconv1.\3"),
    (r"visual\.trunk\.stages\.(\d+)\.blocks\.(\d+)\.mlp\.fc2\.(.*)", r"clip.vision_model.encoder.stages.\1.layers.\2.pwconv2.\3"),
    (r"visual\.trunk\.stages\.(\d+)\.blocks\.(\d+)\.gamma", r"clip.vision_model.encoder.stages.\1.layers.\2.layer_scale_parameter"),
    (r"visual\.trunk\.head\.norm\.(.*)", r"clip.vision_model.layernorm.\1"),
    (r"visual\.head\.mlp\.(fc1|fc2)\.(.*)", r"clip.vision_head.\1.\2"),
    (r"token_embedding\.weight", r"clip.text_model.text_model.embeddings.token_embedding.weight"),
    (r"positional_embedding", r"clip.text_model.text_model.embeddings.position_embedding.weight"),
    (r"transformer\.resblocks\.(\d+)\.ln_1\.(.*)", r"clip.text_model.text_model.encoder.layers.\1.layer_norm1.\2"),
    (r"transformer\.resblocks\.(\d+)\.ln_2\.(.*)", r"clip.text_model.text_model.encoder.layers.\1.layer_norm2.\2"),
    (r"transformer\.resblocks\.(\d+)\.attn\.out_proj\.(.*)", r"clip.text_model.text_model.encoder.layers.\1.self_attn.out_proj.\2"),
    (r"transformer\.resblocks\.(\d+)\.mlp\.c_fc\.(.*)", r"clip.text_model.text_model.encoder.layers.\1.mlp.fc1.\2"),
    (r"transformer\.resblocks\.(\d+)\.mlp\.c_proj\.(.*)", r"clip.text_model.text_model.encoder.layers.\1.mlp.fc2.\2"),
    (r"ln_final\.(.*)", r"clip.text_model.text_model.final_layer_norm.\1"),
    (r"logit_scale", r"clip.logit_scale"),
]

_HEAD_RULES = [
    (r"backbone\.add_tgt_em\.weight", r"dominant_projection"),
    (r"void_embedding\.weight", r"void_embedding.weight"),
    (r"sem_seg_head\.pixel_decoder\.input_proj\.(\d)\.(\d)\.(.*)", r"pixel_decoder.input_projections.\1.\2.\3"),
    (r"sem_seg_head\.pixel_decoder\.transformer\.level_embed", r"pixel_decoder.level_embed"),
    (r"sem_seg_head\.pixel_decoder\.transformer\.encoder\.layers\.(\d+)\.self_attn\.(.*)", r"pixel_decoder.encoder.layers.\1.self_attn.\2"),
    (r"sem_seg_head\.pixel_decoder\.transformer\.encoder\.layers\.(\d+)\.norm1\.(.*)", r"pixel_decoder.encoder.layers.\1.self_attn_layer_norm.\2"),
    (r"sem_seg_head\.pixel_decoder\.transformer\.encoder\.layers\.(\d+)\.linear1\.(.*)", r"pixel_decoder.encoder.layers.\1.fc1.\2"),
    (r"sem_seg_head\.pixel_decoder\.transformer\.encoder\.layers\.(\d+)\.linear2\.(.*)", r"pixel_decoder.encoder.layers.\1.fc2.\2"),
    (r"sem_seg_head\.pixel_decoder\.transformer\.encoder\.layers\.(\d+)\.norm2\.(.*)", r"pixel_decoder.encoder.layers.\1.final_layer_norm.\2"),
    (r"sem_seg_head\.pixel_decoder\.mask_features\.(.*)", r"pixel_decoder.mask_projection.\1"),
    (r"sem_seg_head\.pixel_decoder\.(adapter|layer)_(\d+)\.weight", r"pixel_decoder.\1_\2.0.weight"),
    (r"sem_seg_head\.pixel_decoder\.(adapter|layer)_(\d+)\.norm\.(.*)", r"pixel_decoder.\1_\2.1.\3"),
    (r"sem_seg_head\.predictor\.transformer_cross_attention_layers\.(\d+)\.multihead_attn\.(.*)", r"decoder.layers.\1.cross_attn.\2"),
    (r"sem_seg_head\.predictor\.transformer_cross_attention_layers\.(\d+)\.norm\.(.*)", r"decoder.layers.\1.cross_attn_layer_norm.\2"),
    (r"sem_seg_head\.predictor\.transformer_self_attention_layers\.(\d+)\.self_attn\.out_proj\.(.*)", r"decoder.layers.\1.self_attn.out_proj.\2"),
    (r"sem_seg_head\.predictor\.transformer_self_attention_layers\.(\d+)\.norm\.(.*)", r"decoder.layers.\1.self_attn_layer_norm.\2"),
    (r"sem_seg_head\.predictor\.transformer_ffn_layers\.(\d+)\.linear1\.(.*)", r"decoder.layers.\1.fc1.\2"),
    (r"sem_seg_head\.predictor\.transformer_ffn_layers\.(\d+)\.linear2\.(.*)", r"decoder.layers.\1.fc2.\2"),
    (r"sem_seg_head\.predictor\.transformer_ffn_layers\.(\d+)\.norm\.(.*)", r"decoder.layers.\1.final_layer_norm.\2"),
    (r"sem_seg_head\.predictor\.(decoder_norm|query_feat|query_embed|level_embed)\.(.*)", r"decoder.\1.\2"),
    (r"sem_seg_head\.predictor\.input_proj\.(\d)\.(.*)", r"decoder.input_proj.\1.\2"),
    (r"sem_seg_head\.predictor\.(mask_embed|class_embed)\.layers\.(\d)\.(.*)", r"decoder.\1.\2.0.\3"),
    (r"sem_seg_head\.predictor\._mask_pooling_proj\.(\d)\.(.*)", r"decoder.mask_pooling_proj.\1.\2"),
    (r"sem_seg_head\.predictor\.logit_scale", r"decoder.logit_scale"),
]


def _apply(rules, key: str) -> str | None:
    for pattern, target in rules:
        if re.fullmatch(pattern, key):
            return re.sub(pattern, target, key)
    return None


def _few(names) -> str:
    names = sorted(names)
    return ", ".join(names[:5]) + (f" (+{len(names) - 5} more)" if len(names) > 5 else "")


def convert_clip_state_dict(clip_state: dict) -> tuple[dict, list[str]]:
    """open_clip ConvNeXt CLIP keys (no prefix) -> ITAModel keys; returns (converted, unknown keys)."""
    out, unknown = {}, []
    for key, value in clip_state.items():
        match = re.fullmatch(r"transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)", key)
        if match:
            base = f"clip.text_model.text_model.encoder.layers.{match.group(1)}.self_attn"
            for name, chunk in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                out[f"{base}.{name}.{match.group(2)}"] = chunk.clone()
            continue
        if key == "text_projection":
            out["clip.text_model.text_projection.weight"] = value.t().contiguous()
            continue
        if key == "attn_mask":
            continue
        target = _apply(_CLIP_RULES, key)
        if target is None:
            unknown.append(key)
        else:
            out[target] = value
    return out, unknown


def clip_architecture(clip_state: dict) -> dict:
    """ConvNeXt / text-tower sizes read from open_clip tensor shapes."""
    stages = sorted({int(m.group(1)) for k in clip_state if (m := re.match(r"visual\.trunk\.stages\.(\d+)\.", k))})
    if not stages:
        raise ValueError("not a ConvNeXt CLIP state dict: no visual.trunk.stages.* keys")
    depths = [len({m.group(1) for k in clip_state if (m := re.match(rf"visual\.trunk\.stages\.{s}\.blocks\.(\d+)\.", k))}) for s in stages]
    dims = [clip_state[f"visual.trunk.stages.{s}.blocks.0.conv_dw.weight"].shape[0] for s in stages]
    width = clip_state["token_embedding.weight"].shape[1]
    layers = len({m.group(1) for k in clip_state if (m := re.match(r"transformer\.resblocks\.(\d+)\.", k))})
    return {
        "vision_config": dict(hidden_sizes=dims, depths=depths, layer_norm_eps=1e-6, drop_path_rate=0.0),
        "text_width": width,
        "text_config": dict(
            hidden_size=width, intermediate_size=clip_state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
            num_hidden_layers=layers, projection_dim=clip_state["text_projection"].shape[1], hidden_act="gelu",
            layer_norm_eps=1e-5, max_position_embeddings=clip_state["positional_embedding"].shape[0],
            vocab_size=clip_state["token_embedding.weight"].shape[0], bos_token_id=49406, eos_token_id=49407, pad_token_id=0,
        ),
        "vision_head_hidden_size": clip_state["visual.head.mlp.fc1.weight"].shape[0],
        "clip_image_size": 320,
    }


def _load_cfg(config) -> tuple[dict, dict]:
    """(detectron2 cfg as nested dict, extras) from a dict, a JSON (fixture format) or a YAML with `_BASE_`."""
    if isinstance(config, dict):
        data = config
    else:
        path = str(config)
        if path.endswith(".json"):
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        else:
            data = _load_yaml(path)
    cfg = data.get("cfg", data)
    return cfg, data


def _load_yaml(path: str) -> dict:
    import yaml

    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle) or {}
    base = data.pop("_BASE_", None)
    if base:
        merged = _load_yaml(os.path.join(os.path.dirname(path), base))
        _deep_update(merged, data)
        return merged
    return data


def _deep_update(target: dict, source: dict) -> None:
    for key, value in source.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_update(target[key], value)
        else:
            target[key] = value


def training_classes_of(cfg: dict) -> list[str]:
    """The seen classes of a run trained on COCO panoptic (the released recipe: the preset's 133 classes with
    FC-CLIP's synonyms); empty for other training sets, whose class lists the cfg does not carry."""
    train = cfg.get("DATASETS", {}).get("TRAIN", [])
    if any("coco" in name and "panoptic" in name for name in train):
        return list(ita_preset_values("ita_convnext_large_d_320")["seen_class_names"])
    return []


def _count(state: dict, pattern: str) -> int:
    return len({m.group(1) for k in state if (m := re.match(pattern, k))})


def detect_architecture(state: dict, cfg: dict | None = None) -> str:
    """"ita" or "fcclip" for an original checkpoint of the FCCLIP meta-architecture (both repositories use that
    name): ITA has the text-query projection `backbone.add_tgt_em.weight` (and no decoder self-attention), FC-CLIP
    has `sem_seg_head.predictor.transformer_self_attention_layers.*` and no text-query projection. `ValueError`
    (one line naming what was found) for anything else."""
    arch = ((cfg or {}).get("MODEL") or {}).get("META_ARCHITECTURE")
    if arch is not None and arch != "FCCLIP":
        raise ValueError(f"ITA / FC-CLIP conversion: the cfg's MODEL.META_ARCHITECTURE is {arch!r}, not 'FCCLIP'")
    if not any(k.startswith(CLIP_PREFIX) for k in state):
        raise ValueError(f"ITA / FC-CLIP conversion: no '{CLIP_PREFIX}*' keys; is this an ITA / FC-CLIP checkpoint?")
    if ITA_MARKER in state:
        return "ita"
    if any(k.startswith(FCCLIP_MARKER) for k in state):
        return "fcclip"
    raise ValueError(
        f"ITA / FC-CLIP conversion: neither ITA's text-query projection ({ITA_MARKER}) nor FC-CLIP's decoder "
        f"self-attention ({FCCLIP_MARKER}*) is in the checkpoint"
    )


def head_architecture(state: dict, architecture: str) -> dict:
    """Pixel-decoder and decoder sizes read from the original tensor shapes (ITAConfig names). Decoder attention
    heads are MSDeformAttn's (the original uses MASK_FORMER.NHEADS for both, with 3 levels x 4 points)."""
    try:
        feat, hidden = state[PREDICTOR + "query_feat.weight"].shape, state[PREDICTOR + "query_embed.weight"].shape[0]
        levels, feature_size = state[PIXEL_DECODER + "transformer.level_embed"].shape
        layer0 = PIXEL_DECODER + "transformer.encoder.layers.0."
        sampling = state[layer0 + "self_attn.attention_weights.weight"].shape[0]
        values = dict(
            hidden_dim=feat[1], feature_size=feature_size,
            mask_feature_size=state[PIXEL_DECODER + "mask_features.weight"].shape[0],
            encoder_layers=_count(state, re.escape(PIXEL_DECODER) + r"transformer\.encoder\.layers\.(\d+)\."),
            encoder_feedforward_dim=state[layer0 + "linear1.weight"].shape[0],
            num_attention_heads=sampling // (levels * DEFORMABLE_POINTS),
            decoder_layers=_count(state, re.escape(PREDICTOR) + r"transformer_cross_attention_layers\.(\d+)\.") + 1,
            # One FPN level (adapter_1) per stride halving below 8: common stride 4 for the released models.
            common_stride=8 // 2 ** _count(state, re.escape(PIXEL_DECODER) + r"adapter_(\d+)\."),
            decoder_self_attention=any(k.startswith(FCCLIP_MARKER) for k in state),
        )
    except KeyError as error:
        raise ValueError(f"ITA / FC-CLIP conversion: the checkpoint has no {error.args[0]}") from None
    ffn = PREDICTOR + "transformer_ffn_layers.0.linear1.weight"
    if ffn in state:  # a decoder of one prediction (DEC_LAYERS 1) has no layer: the cfg's width stands
        values["dim_feedforward"] = state[ffn].shape[0]
    # The positional table holds a row per query: ITA's text queries first (hard-coded count), then the learned ones.
    text = ITA_TEXT_QUERIES if architecture == "ita" else 0
    values.update(num_text_queries=text, num_learned_queries=hidden - text)
    return values


def config_from_cfg(cfg: dict, clip_state: dict, extras: dict | None = None, *, state: dict | None = None,
                    architecture: str = "ita", **overrides) -> ITAConfig:
    """`ITAConfig` (or `FCCLIPConfig` for `architecture="fcclip"`) from a detectron2 cfg and the checkpoint's
    tensors: CLIP sizes from `clip_state`, head sizes from the full `state` when given (else the cfg's)."""
    extras = extras or {}
    model = cfg.get("MODEL", {})
    head, m2f, fc = model.get("SEM_SEG_HEAD", {}), model.get("MASK_FORMER", {}), model.get("FC_CLIP", {})
    test = m2f.get("TEST", {})
    arch = clip_architecture(clip_state)
    # open_clip's text heads are not in the tensors: the fixture JSON carries them, else width / 64 (open_clip's rule).
    heads = overrides.pop("text_num_attention_heads", None) or extras.get("open_clip_model_config", {}).get(
        "text_cfg", {}).get("heads") or max(1, arch["text_width"] // 64)
    arch["text_config"]["num_attention_heads"] = heads
    image_size = extras.get("open_clip_model_config", {}).get("vision_cfg", {}).get("image_size", arch["clip_image_size"])
    spec = extras.get("spec", {})
    values = dict(
        vision_config=arch["vision_config"], text_config=arch["text_config"],
        vision_head_hidden_size=arch["vision_head_hidden_size"], clip_image_size=image_size,
        pixel_mean=model.get("PIXEL_MEAN", [122.7709383, 116.7460125, 104.09373615]),
        pixel_std=model.get("PIXEL_STD", [68.5005327, 66.6321579, 70.32316305]),
        size_divisibility=m2f.get("SIZE_DIVISIBILITY", 32),
        # detectron2's test-time ResizeShortestEdge (its defaults when the cfg does not set them).
        min_size_test=cfg.get("INPUT", {}).get("MIN_SIZE_TEST", 800),
        max_size_test=cfg.get("INPUT", {}).get("MAX_SIZE_TEST", 1333),
        feature_size=head.get("CONVS_DIM", 256), mask_feature_size=head.get("MASK_DIM", 256),
        encoder_layers=head.get("TRANSFORMER_ENC_LAYERS", 6), num_attention_heads=m2f.get("NHEADS", 8),
        common_stride=head.get("COMMON_STRIDE", 4), hidden_dim=m2f.get("HIDDEN_DIM", 256),
        dim_feedforward=m2f.get("DIM_FEEDFORWARD", 2048), decoder_layers=m2f.get("DEC_LAYERS", 10),
        pre_norm=m2f.get("PRE_NORM", False), num_learned_queries=m2f.get("NUM_OBJECT_QUERIES", 180),
        geometric_ensemble_alpha=fc.get("GEOMETRIC_ENSEMBLE_ALPHA", 0.4), geometric_ensemble_beta=fc.get("GEOMETRIC_ENSEMBLE_BETA", 0.8),
        ensemble_on_valid_mask=fc.get("ENSEMBLE_ON_VALID_MASK", False),
        class_weight=m2f.get("CLASS_WEIGHT", 2.0), mask_weight=m2f.get("MASK_WEIGHT", 5.0), dice_weight=m2f.get("DICE_WEIGHT", 5.0),
        no_object_weight=m2f.get("NO_OBJECT_WEIGHT", 0.1), train_num_points=m2f.get("TRAIN_NUM_POINTS", 12544),
        oversample_ratio=m2f.get("OVERSAMPLE_RATIO", 3.0), importance_sample_ratio=m2f.get("IMPORTANCE_SAMPLE_RATIO", 0.75),
        deep_supervision=m2f.get("DEEP_SUPERVISION", True),
        postprocess_order="before" if (
            test.get("SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE") or test.get("PANOPTIC_ON") or test.get("INSTANCE_ON")
        ) else "after",
        seen_class_names=spec.get("train_classes") or training_classes_of(cfg),
    )
    if state is not None:
        values.update(head_architecture(state, architecture))
    values.update(overrides)
    return ARCHITECTURES[architecture][0](**values)


def _checked_load(model: ITAModel, state: dict, allow_missing: tuple[str, ...] = ()) -> None:
    expected = model.state_dict()
    unknown = [k for k in state if k not in expected]
    if unknown:
        raise ValueError(f"ITA conversion: {len(unknown)} converted keys the model does not have: {_few(unknown)}")
    shapes = [f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}" for k, v in state.items() if tuple(v.shape) != tuple(expected[k].shape)]
    if shapes:
        raise ValueError(f"ITA conversion: {len(shapes)} mis-shaped tensors (checkpoint vs model): {_few(shapes)}")
    missing = [k for k in expected if k not in state and not k.startswith(allow_missing)]
    if missing:
        raise ValueError(f"ITA conversion: {len(missing)} model tensors missing from the checkpoint: {_few(missing)}")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=False)


def _read_state(checkpoint) -> dict:
    """The state dict of a checkpoint dict or file (read weights-only: nothing in the file runs)."""
    source = "the checkpoint"
    if not isinstance(checkpoint, dict):
        from .safe_io import load_torch_file

        source = str(checkpoint)
        checkpoint = load_torch_file(checkpoint)
    state = checkpoint.get("model", checkpoint.get("state_dict", checkpoint)) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{source} holds no state dict (expected a mapping of names to tensors, or one under 'model')")
    return state


def convert_original_checkpoint(checkpoint, config, save_directory: str | None = None, **overrides) -> ITAModel:
    """Original ITA or FC-CLIP detectron2 checkpoint + cfg -> `ITAModel` or `FCCLIPModel` (which one:
    `detect_architecture`), saved to `save_directory` when given. `overrides` replace config values."""
    state = _read_state(checkpoint)
    cfg, extras = _load_cfg(config)
    architecture = detect_architecture(state, cfg)
    clip_state = {k[len(CLIP_PREFIX):]: v for k, v in state.items() if k.startswith(CLIP_PREFIX)}
    model_class = ARCHITECTURES[architecture][1]
    model = model_class(config_from_cfg(cfg, clip_state, extras, state=state, architecture=architecture, **overrides)).eval()
    converted, unknown = convert_clip_state_dict(clip_state)
    for key, value in state.items():
        if key.startswith(CLIP_PREFIX) or key in _DROPPED:
            continue
        match = re.fullmatch(re.escape(FCCLIP_MARKER) + r"(\d+)\.self_attn\.in_proj_(weight|bias)", key)
        if match:
            # nn.MultiheadAttention's fused q, k, v rows -> transformers' separate projections.
            base = f"decoder.layers.{match.group(1)}.self_attn"
            for name, chunk in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                converted[f"{base}.{name}.{match.group(2)}"] = chunk.clone()
            continue
        target = _apply(_HEAD_RULES, key)
        if target is None:
            unknown.append(key)
        else:
            converted[target] = value
    if unknown:
        raise ValueError(f"ITA conversion: {len(unknown)} unknown checkpoint keys: {_few(unknown)}")
    _checked_load(model, converted)
    model.freeze_clip()
    if save_directory:
        model.save_pretrained(save_directory)
    return model


def convert_open_clip_checkpoint(clip_checkpoint, save_directory: str | None = None, architecture: str = "ita",
                                 **overrides) -> ITAModel:
    """open_clip ConvNeXt CLIP state dict (e.g. convnext_large_d_320) -> `ITAModel` (or `FCCLIPModel` for
    `architecture="fcclip"`) with an untrained head."""
    state = _read_state(clip_checkpoint)
    state = {k[len(CLIP_PREFIX):] if k.startswith(CLIP_PREFIX) else k: v for k, v in state.items()}
    arch = clip_architecture(state)
    arch["text_config"]["num_attention_heads"] = overrides.pop("text_num_attention_heads", max(1, arch["text_width"] // 64))
    values = dict(vision_config=arch["vision_config"], text_config=arch["text_config"],
                  vision_head_hidden_size=arch["vision_head_hidden_size"])
    values.update(overrides)
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {sorted(ARCHITECTURES)}, got {architecture!r}")
    config_class, model_class = ARCHITECTURES[architecture]
    model = model_class(config_class(**values)).eval()
    converted, unknown = convert_clip_state_dict(state)
    if unknown:
        raise ValueError(f"ITA conversion: {len(unknown)} unknown open_clip keys: {_few(unknown)}")
    head = ("pixel_decoder.", "decoder.", "dominant_projection", "void_embedding.")
    _checked_load(model, converted, allow_missing=head)
    model.freeze_clip()
    if save_directory:
        model.save_pretrained(save_directory)
    return model


__all__ = [
    "config_from_cfg", "convert_clip_state_dict", "convert_open_clip_checkpoint", "convert_original_checkpoint",
    "detect_architecture", "head_architecture",
]
