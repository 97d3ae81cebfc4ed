"""Convert checkpoints of the original detectron2 FGA-Seg training into `FGASegModel` folders.

The original's key names live here and nowhere else: `convert_state_dict` maps every key of the original
`FGASeg.state_dict()` to ours (splitting fused attention projections, transposing CLIP projections), and the
architecture is read back from tensor shapes, with the original cfg for what shapes cannot tell.
"""

from __future__ import annotations

import json
import os
import re

import torch
import yaml
from transformers import CLIPConfig

from .configuration_fgaseg import FGASegConfig
from .fgaseg_aggregation import shifted_window_mask
from .prompt_templates import resolve_templates

HEAD = "sem_seg_head.predictor."
CLIP = HEAD + "clip_model."

# Original cfg defaults (FGA_seg/config.py) for keys a YAML may leave out.
CFG_DEFAULTS = {
    "MODEL.SEM_SEG_HEAD.NUM_HEADS": 4,
    "MODEL.SEM_SEG_HEAD.POOLING_SIZES": [6, 6],
    "MODEL.SEM_SEG_HEAD.WINDOW_SIZES": 12,
    "MODEL.SEM_SEG_HEAD.ATTENTION_TYPE": "linear",
    "MODEL.SEM_SEG_HEAD.CLIP_FINETUNE": "attention",
    "MODEL.SEM_SEG_HEAD.LAMBDA_AUXI": 0.2,
    "MODEL.SEM_SEG_HEAD.LAMBDA_ALIGN": 0.02,
    "MODEL.SEM_SEG_HEAD.IGNORE_VALUE": 255,
    "MODEL.SEM_SEG_HEAD.CLIP_PRETRAINED": "ViT-B/16",
    "MODEL.PROMPT_ENSEMBLE_TYPE": "single",
}
# Values the original hard-codes instead of exposing them.
ORIGINAL_PAD_LEN = 256
ORIGINAL_FAST_TOP_K = 16
ORIGINAL_P2T_HEADS = 8


class ConversionError(ValueError):
    """The checkpoint or config cannot be converted; the message names the keys or values at fault."""


# ----------------------------------------------------------------------------- config reading
def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and key not in ("derived", "clip"):
            flat.update(_flatten(value, name))
        else:
            flat[name] = value
    return flat


def read_original_config(path: str, _chain: tuple[str, ...] = ()) -> dict:
    """Original cfg as `{"MODEL.SEM_SEG_HEAD.NUM_LAYERS": 2, ...}` from a detectron2 YAML (resolving `_BASE_`)
    or a JSON with the same cfg names (nested or dotted); `derived` and `clip` blocks are kept as dicts."""
    if not os.path.isfile(path):
        raise ConversionError(f"config file not found: {path}")
    real = os.path.realpath(path)
    if real in _chain:
        raise ConversionError(f"{path}: its _BASE_ chain loops ({' -> '.join(_chain + (real,))})")
    try:
        with open(path, encoding="utf-8") as handle:
            tree = json.load(handle) if path.endswith(".json") else yaml.safe_load(handle)
    except (yaml.YAMLError, ValueError) as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConversionError(f"{path}: not valid {'JSON' if path.endswith('.json') else 'YAML'} ({detail})") from None
    if not isinstance(tree, dict):
        raise ConversionError(f"{path} does not hold a config mapping")
    flat = {}
    base = tree.pop("_BASE_", None)
    if base:
        if not isinstance(base, str):
            raise ConversionError(f"{path}: _BASE_ must be a file name, got {base!r}")
        flat.update(read_original_config(os.path.join(os.path.dirname(path), base), _chain + (real,)))
    flat.update(_flatten(tree))
    return flat


def _cfg(cfg: dict, key: str):
    return cfg.get(key, CFG_DEFAULTS.get(key))


# ----------------------------------------------------------------------------- key mapping
_CLIP_BLOCK = {
    "attn.out_proj.weight": "self_attn.out_proj.weight",
    "attn.out_proj.bias": "self_attn.out_proj.bias",
    "ln_1.weight": "layer_norm1.weight",
    "ln_1.bias": "layer_norm1.bias",
    "ln_2.weight": "layer_norm2.weight",
    "ln_2.bias": "layer_norm2.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight",
    "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight",
    "mlp.c_proj.bias": "mlp.fc2.bias",
    "attn.q_proj_weight": "self_attn.q_proj.weight",
    "attn.k_proj_weight": "self_attn.k_proj.weight",
    "attn.v_proj_weight": "self_attn.v_proj.weight",
}
_CLIP_PLAIN = {
    "visual.conv1.weight": "clip.vision_model.embeddings.patch_embedding.weight",
    "visual.class_embedding": "clip.vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "clip.vision_model.embeddings.position_embedding.weight",
    "visual.ln_pre.weight": "clip.vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "clip.vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "clip.vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "clip.vision_model.post_layernorm.bias",
    "token_embedding.weight": "clip.text_model.embeddings.token_embedding.weight",
    "positional_embedding": "clip.text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "clip.text_model.final_layer_norm.weight",
    "ln_final.bias": "clip.text_model.final_layer_norm.bias",
    "logit_scale": "clip.logit_scale",
}
_CLIP_TRANSPOSED = {"visual.proj": "clip.visual_projection.weight", "text_projection": "clip.text_projection.weight"}

# Head keys (after the predictor prefix); "{i}", "{j}" stand for indexes.
_HEAD_RULES = [
    (r"DCDT\.gamma_text", "pixel_text_attention.gamma"),
    (r"DCDT\.cross_atten_text\.(\d+)\.multihead_attn\.out_proj\.(weight|bias)", r"pixel_text_attention.layers.\1.out_proj.\2"),
    (r"DCDT\.cross_atten_text\.(\d+)\.norm\.(weight|bias)", r"pixel_text_attention.layers.\1.layer_norm.\2"),
    (r"DCDT\.cross_atten_text\.(\d+)\.MLP\.(weight|bias)", r"pixel_text_attention.layers.\1.dense.\2"),
    (r"proj\.vis\.1\.0\.weight", "alignment_projector.conv1.weight"),
    (r"proj\.vis\.1\.1\.(.+)", r"alignment_projector.norm1.\1"),
    (r"proj\.vis\.3\.0\.weight", "alignment_projector.conv2.weight"),
    (r"proj\.vis\.3\.1\.(.+)", r"alignment_projector.norm2.\1"),
    (r"proj\.vis\.4\.(weight|bias)", r"alignment_projector.conv3.\1"),
    (r"proj\.txt\.(weight|bias)", r"alignment_projector.text_to_kernel.\1"),
    (r"transformer\.layers\.(\d+)\.swin_block\.(block_\d)\.attn\.(q|k|v|proj)\.(weight|bias)", r"decoder.layers.\1.swin_block.\2.\3.\4"),
    (r"transformer\.layers\.(\d+)\.swin_block\.(block_\d)\.(norm1|norm2|mlp\.fc1|mlp\.fc2)\.(weight|bias)", r"decoder.layers.\1.swin_block.\2.\3.\4"),
    (r"transformer\.layers\.(\d+)\.swin_block\.guidance_norm\.(weight|bias)", r"decoder.layers.\1.swin_block.guidance_norm.\2"),
    (r"transformer\.layers\.(\d+)\.attention\.attention\.(q|k|v)\.(weight|bias)", r"decoder.layers.\1.class_attention.\2.\3"),
    (r"transformer\.layers\.(\d+)\.attention\.MLP\.(\d)\.(weight|bias)", r"decoder.layers.\1.class_attention.mlp.\2.\3"),
    (r"transformer\.layers\.(\d+)\.attention\.(norm1|norm2)\.(weight|bias)", r"decoder.layers.\1.class_attention.\2.\3"),
    (r"transformer\.layers\.(\d+)\.attention\.padding_tokens", r"decoder.layers.\1.class_attention.padding_token"),
    (r"transformer\.layers\.(\d+)\.attention\.padding_guidance", r"decoder.layers.\1.class_attention.padding_guidance"),
    (r"transformer\.conv1\.(weight|bias)", r"decoder.global_embed.\1"),
    (r"transformer\.conv2\.(weight|bias)", r"decoder.local_embed.\1"),
    (r"transformer\.conv_cat\.(weight|bias)", r"decoder.fuse_embed.\1"),
    (r"transformer\.conv_cat_decoder_1\.(weight|bias)", r"decoder.fuse_stage1.\1"),
    (r"transformer\.conv_cat_decoder_2\.(weight|bias)", r"decoder.fuse_stage2.\1"),
    (r"transformer\.corr_local_decoder_projection\.0\.(weight|bias)", r"decoder.local_upsample.\1"),
    (r"transformer\.corr_local_decoder_projection\.1\.double_conv\.0\.weight", "decoder.local_upsample_conv.conv1.weight"),
    (r"transformer\.corr_local_decoder_projection\.1\.double_conv\.1\.(weight|bias)", r"decoder.local_upsample_conv.norm1.\1"),
    (r"transformer\.corr_local_decoder_projection\.1\.double_conv\.3\.weight", "decoder.local_upsample_conv.conv2.weight"),
    (r"transformer\.corr_local_decoder_projection\.1\.double_conv\.4\.(weight|bias)", r"decoder.local_upsample_conv.norm2.\1"),
    (r"transformer\.guidance_projection\.0\.(weight|bias)", r"decoder.appearance_guidance_projection.\1"),
    (r"transformer\.text_guidance_projection\.0\.(weight|bias)", r"decoder.text_guidance_projection.\1"),
    (r"transformer\.decoder_guidance_projection\.(\d)\.0\.(weight|bias)", r"decoder.decoder_guidance_projection.\1.\2"),
    (r"transformer\.decoder(\d)\.up\.(weight|bias)", r"decoder.decoder\1.up.\2"),
    (r"transformer\.decoder(\d)\.conv\.double_conv\.0\.weight", r"decoder.decoder\1.conv.conv1.weight"),
    (r"transformer\.decoder(\d)\.conv\.double_conv\.1\.(weight|bias)", r"decoder.decoder\1.conv.norm1.\2"),
    (r"transformer\.decoder(\d)\.conv\.double_conv\.3\.weight", r"decoder.decoder\1.conv.conv2.weight"),
    (r"transformer\.decoder(\d)\.conv\.double_conv\.4\.(weight|bias)", r"decoder.decoder\1.conv.norm2.\2"),
    (r"transformer\.head\.(weight|bias)", r"decoder.head.\1"),
    (r"transformer\.head_auxi_(\d)\.(weight|bias)", r"decoder.aux_head\1.\2"),
    (r"transformer\.Local_align\.txt\.(weight|bias)", r"decoder.local_alignment.text_to_kernel.\1"),
]
_TOP_RULES = [(r"upsample1\.(weight|bias)", r"guidance_upsample1.\1"), (r"upsample2\.(weight|bias)", r"guidance_upsample2.\1")]
# Buffers of the original that ours derives (checked, not copied).
_DERIVED = re.compile(r"transformer\.layers\.\d+\.swin_block\.block_\d\.attn_mask")


def convert_state_dict(original: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map an original `FGASeg.state_dict()` to `FGASegModel` names. Returns (converted, unknown original keys)."""
    out, unknown = {}, []
    for key, tensor in original.items():
        if key.startswith(CLIP):
            name = key[len(CLIP) :]
            block = re.match(r"(visual\.)?transformer\.resblocks\.(\d+)\.(.+)", name)
            if block:
                tower = "vision_model" if block.group(1) else "text_model"
                prefix = f"clip.{tower}.encoder.layers.{block.group(2)}."
                rest = block.group(3)
                if rest == "attn.in_proj_bias":
                    for part, chunk in zip("qkv", tensor.chunk(3)):
                        out[f"{prefix}self_attn.{part}_proj.bias"] = chunk.clone()
                elif rest == "attn.in_proj_weight":
                    for part, chunk in zip("qkv", tensor.chunk(3)):
                        out[f"{prefix}self_attn.{part}_proj.weight"] = chunk.clone()
                elif rest in _CLIP_BLOCK:
                    out[prefix + _CLIP_BLOCK[rest]] = tensor
                else:
                    unknown.append(key)
            elif name in _CLIP_PLAIN:
                out[_CLIP_PLAIN[name]] = tensor
            elif name in _CLIP_TRANSPOSED:
                out[_CLIP_TRANSPOSED[name]] = tensor.t().contiguous()
            else:
                unknown.append(key)
            continue
        if key.startswith(HEAD):
            name = key[len(HEAD) :]
            p2t = re.match(r"DCDT\.cross_atten_text\.(\d+)\.multihead_attn\.in_proj_(weight|bias)", name)
            if p2t:
                for part, chunk in zip("qkv", tensor.chunk(3)):
                    out[f"pixel_text_attention.layers.{p2t.group(1)}.{part}_proj.{p2t.group(2)}"] = chunk.clone()
                continue
            if _DERIVED.fullmatch(name):
                continue
            rules = _HEAD_RULES
        else:
            name, rules = key, _TOP_RULES
        for pattern, target in rules:
            if re.fullmatch(pattern, name):
                converted = re.sub(pattern, target, name)
                if converted.endswith(("padding_token", "padding_guidance")):
                    tensor = tensor.reshape(-1)
                out[converted] = tensor
                break
        else:
            unknown.append(key)
    return out, unknown


# ----------------------------------------------------------------------------- architecture
def _count(keys, pattern) -> int:
    found = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def _shape(state, key) -> tuple[int, ...]:
    if key not in state:
        raise ConversionError(f"the checkpoint lacks {key!r}: it is not an FGA-Seg checkpoint (nor a CAT-Seg one) of the original code")
    return tuple(state[key].shape)


def _present(cfg: dict, block: str) -> dict:
    """A `derived` / `clip` block without its null entries: a value the exporter had none for (e.g. the no_fast
    decoder's top-k) takes the default, as if it were absent."""
    values = cfg.get(block) or {}
    if not isinstance(values, dict):
        raise ConversionError(f"the config's {block!r} block must be a mapping, got {type(values).__name__}")
    return {key: value for key, value in values.items() if value is not None}


def is_catseg_state(state: dict[str, torch.Tensor]) -> bool:
    """Whether an original head holds CAT-Seg (a cost-aggregation head without FGA-Seg's pixel-to-text attention,
    local alignment and projector)."""
    fgaseg_only = (HEAD + "DCDT.", HEAD + "proj.", HEAD + "transformer.Local_align.")
    return HEAD + "transformer.conv1.weight" in state and not any(k.startswith(fgaseg_only) for k in state)


def infer_config(state: dict[str, torch.Tensor], cfg: dict) -> FGASegConfig:
    """Build the `FGASegConfig` of an original checkpoint (a `CATSegConfig` for a CAT-Seg head): sizes from tensor
    shapes, the rest from the cfg."""
    keys = list(state)
    derived, clip_block = _present(cfg, "derived"), _present(cfg, "clip")

    patch_shape = _shape(state, CLIP + "visual.conv1.weight")
    vision_width, patch = patch_shape[0], patch_shape[-1]
    native_grid = int(round((_shape(state, CLIP + "visual.positional_embedding")[0] - 1) ** 0.5))
    vision_layers = _count(keys, re.escape(CLIP) + r"visual\.transformer\.resblocks\.(\d+)\.")
    text_layers = _count(keys, re.escape(CLIP) + r"transformer\.resblocks\.(\d+)\.")
    vocab, text_width = _shape(state, CLIP + "token_embedding.weight")
    context = _shape(state, CLIP + "positional_embedding")[0]
    projection = _shape(state, CLIP + "text_projection")[1]
    if _shape(state, CLIP + "visual.proj") != (vision_width, projection):
        raise ConversionError("visual.proj and text_projection disagree on the CLIP embedding size")
    clip_config = CLIPConfig(
        projection_dim=projection,
        vision_config=dict(
            hidden_size=vision_width,
            intermediate_size=_shape(state, CLIP + "visual.transformer.resblocks.0.mlp.c_fc.weight")[0],
            num_hidden_layers=vision_layers,
            # The original derives head counts as width // 64 when it loads OpenAI weights.
            num_attention_heads=int(clip_block.get("vision_heads", max(1, vision_width // 64))),
            image_size=native_grid * patch,
            patch_size=patch,
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
        ),
        text_config=dict(
            hidden_size=text_width,
            intermediate_size=_shape(state, CLIP + "transformer.resblocks.0.mlp.c_fc.weight")[0],
            num_hidden_layers=text_layers,
            num_attention_heads=int(clip_block.get("transformer_heads", max(1, text_width // 64))),
            max_position_embeddings=context,
            vocab_size=vocab,
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
            bos_token_id=vocab - 2,
            eos_token_id=vocab - 1,
            pad_token_id=vocab - 1,
        ),
    )
    t = "transformer."
    hidden, templates = _shape(state, HEAD + t + "conv1.weight")[:2]
    text_proj, text_in = _shape(state, HEAD + t + "text_guidance_projection.0.weight")
    app_proj, app_in = _shape(state, HEAD + t + "guidance_projection.0.weight")[:2]
    dg = [_shape(state, HEAD + t + f"decoder_guidance_projection.{i}.0.weight")[:2] for i in range(2)]
    decoder_dims = [_shape(state, HEAD + t + f"decoder{i}.conv.double_conv.0.weight")[0] for i in (1, 2)]
    catseg = is_catseg_state(state)
    fgaseg_only = {}
    if not catseg:
        local_rows = _shape(state, HEAD + t + "Local_align.txt.weight")[0]
        projector_rows = _shape(state, HEAD + "proj.txt.weight")[0]
        fgaseg_only = dict(
            fusion_mode="cat" if HEAD + t + "conv_cat.weight" in state else "add",
            p2t_num_layers=_count(keys, re.escape(HEAD) + r"DCDT\.cross_atten_text\.(\d+)\."),
            p2t_num_heads=int(derived.get("p2t_nhead", ORIGINAL_P2T_HEADS)),
            local_alignment_kernel_size=int(round(((local_rows - 1) / projection) ** 0.5)),
            projector_kernel_size=int(round(((projector_rows - 1) / (projection // 2)) ** 0.5)),
            decoder_mode="fast" if HEAD + t + "head_auxi_0.weight" in state else "no_fast",
        )
    head = "MODEL.SEM_SEG_HEAD."
    # The cfg's ensemble name decides; a bare template list (as in fixture JSONs) serves when it is absent.
    template_spec = cfg.get("MODEL.PROMPT_ENSEMBLE_TYPE") or cfg.get("prompt_templates") or "single"
    prompt_templates = resolve_templates(template_spec)
    if len(prompt_templates) != templates:
        raise ConversionError(
            f"the checkpoint's cost embedding takes {templates} template channel(s) but the config's prompt ensemble "
            f"{template_spec!r} has {len(prompt_templates)} templates"
        )
    lambda_aux = float(_cfg(cfg, head + "LAMBDA_AUXI"))
    clip_name = str(_cfg(cfg, head + "CLIP_PRETRAINED"))
    default_res = 384 if clip_name == "ViT-B/16" else 336
    resolution = derived.get("clip_resolution", [default_res])[0]
    layer_indexes = derived.get("clip_layer_indexes", [3, 7] if clip_name == "ViT-B/16" else [7, 15])
    finetune = str(_cfg(cfg, head + "CLIP_FINETUNE"))
    if finetune not in ("attention", "full", "frozen"):
        raise ConversionError(f"CLIP_FINETUNE {finetune!r} is not supported (prompt tuning is not implemented)")
    config_class = FGASegConfig
    if catseg:
        from .configuration_catseg import CATSegConfig

        config_class = CATSegConfig
    return config_class(
        clip_config=clip_config,
        text_guidance_dim=text_in,
        text_guidance_proj_dim=text_proj,
        appearance_guidance_dim=app_in,
        appearance_guidance_proj_dim=app_proj,
        decoder_dims=decoder_dims,
        decoder_guidance_dims=[dg[0][1], dg[1][1]],
        decoder_guidance_proj_dims=[dg[0][0], dg[1][0]],
        num_aggregation_layers=_count(keys, re.escape(HEAD + t) + r"layers\.(\d+)\."),
        num_attention_heads=int(_cfg(cfg, head + "NUM_HEADS")),
        hidden_dim=hidden,
        pooling_size=list(_cfg(cfg, head + "POOLING_SIZES")),
        window_size=int(_cfg(cfg, head + "WINDOW_SIZES")),
        class_attention_type=str(_cfg(cfg, head + "ATTENTION_TYPE")),
        **fgaseg_only,
        auxiliary_loss_weights=[lambda_aux, 1.0, 1.0],
        alignment_loss_weight=float(_cfg(cfg, head + "LAMBDA_ALIGN")),
        guidance_layer_indexes=list(layer_indexes),
        image_size=int(resolution),
        class_aggregation_length=int(derived.get("pad_len", ORIGINAL_PAD_LEN)),
        inference_top_k=int(derived.get("fast_eval_select_topk", ORIGINAL_FAST_TOP_K)),
        prompt_templates=prompt_templates,
        ignore_index=int(_cfg(cfg, head + "IGNORE_VALUE")),
        clip_finetune=finetune,
    )


# ----------------------------------------------------------------------------- whole conversion
def load_original_checkpoint(path: str) -> dict[str, torch.Tensor]:
    from .safe_io import UnsafeFileError, load_torch_file

    if not os.path.isfile(path):
        raise ConversionError(f"checkpoint not found: {path}")
    try:
        checkpoint = load_torch_file(path)
    except UnsafeFileError as error:
        raise ConversionError(str(error)) from None
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConversionError(f"{path} holds no state_dict (expected a dict whose 'model' entry maps names to tensors)")
    return state


def convert_original_checkpoint(checkpoint_path: str, config_path: str, class_names: list[str] | None = None, tokenizer=None):
    """Original checkpoint + cfg -> `FGASegModel` (`CATSegModel` for a CAT-Seg checkpoint) with every tensor checked
    (missing, unknown, mis-shaped).
    `class_names` become the default vocabulary, tokenised with `tokenizer` (default: the CLIP tokenizer)."""
    from .modeling_catseg import CATSegModel
    from .modeling_fgaseg import FGASegModel

    # Paths, or (from `conversion_auto`) a state dict already read and a cfg already flattened.
    state = checkpoint_path if isinstance(checkpoint_path, dict) else load_original_checkpoint(checkpoint_path)
    cfg = config_path if isinstance(config_path, dict) else read_original_config(config_path)
    config = infer_config(state, cfg)
    converted, unknown = convert_state_dict(state)
    family = "CAT-Seg" if config.model_type == "catseg" else "FGA-Seg"
    if unknown:
        raise ConversionError(f"{len(unknown)} checkpoint keys have no {family} counterpart: {unknown[:20]}")
    model = CATSegModel(config) if config.model_type == "catseg" else FGASegModel(config)
    expected = model.state_dict()
    _check_derived_masks(state, model)
    missing = sorted(k for k in expected if k not in converted and not k.startswith("default_"))
    extra = sorted(k for k in converted if k not in expected)
    shapes = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}" for k, v in converted.items() if k in expected and v.shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f"missing from the checkpoint: {missing[:20]}")
    if extra:
        problems.append(f"not in the model: {extra[:20]}")
    if shapes:
        problems.append(f"mis-shaped: {shapes[:20]}")
    if problems:
        raise ConversionError("the checkpoint does not match the inferred architecture; " + "; ".join(problems))
    model.load_state_dict(converted, strict=False)
    model.eval()
    if class_names:
        from .processing_fgaseg import FGASegProcessor

        if tokenizer is None:
            from .clip_tokenizer import build_clip_tokenizer

            tokenizer = build_clip_tokenizer(config.clip_config.text_config.max_position_embeddings)
        processor = FGASegProcessor.from_model_config(config, tokenizer)
        model.set_default_vocabulary(class_names, processor.tokenize_vocabulary(class_names)["input_ids"])
    return model


def _check_derived_masks(state, model) -> None:
    """The shifted-window masks the original stores must equal the ones we derive from the geometry."""
    for key, mask in state.items():
        match = re.search(r"transformer\.layers\.(\d+)\.swin_block\.(block_\d)\.attn_mask", key)
        if not match:
            continue
        block = getattr(model.decoder.layers[int(match.group(1))].swin_block, match.group(2))
        size = model.config.feature_resolution
        ours = shifted_window_mask(size, size, block.window, block.shift)[:, 0]
        if ours.shape != mask.shape or not torch.equal(ours, mask.float()):
            raise ConversionError(f"{key} does not match the window geometry (window {block.window}, grid {size})")
