"""Numerical parity of FCCLIPModel with the original FC-CLIP code (bytedance/fc-clip) on its reference fixtures,
through the converter.

Fixture folders: `tests/fixtures/parity/*` plus `FGASEG_PARITY_FIXTURES`; a folder is an FC-CLIP fixture when its
config.json holds a detectron2 cfg of the FCCLIP meta-architecture recorded from the FC-CLIP sources alone. Inputs
follow the fixture README: (uint8 - PIXEL_MEAN) / PIXEL_STD, zero padding to a multiple of 32.

Tolerances (the issue's): logits within 1e-4, identical matchings, loss terms within 1e-5 relative; features within
2e-5. Run on one thread, as recorded, every compared tensor is in fact exact on this machine (measured); text-side
tensors, the decoder's memory masks and the matchings are compared for equality.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import fixture_params, is_fcclip_fixture, parity_fixture_folders, require_fixture
from parity_helpers import (
    ReplayedRand,
    check_matches,
    check_training_predictions,
    diff,
    normalised_batch,
    original_state_dict,
    record_matches,
    run_recorded_training,
)

from fgaseg_hf.clip_tokenizer import build_clip_tokenizer
from fgaseg_hf.conversion_ita import convert_original_checkpoint, detect_architecture
from fgaseg_hf.ita_decoder import synonym_gather_index
from fgaseg_hf.ita_inference import geometric_ensemble, semantic_maps

FOLDERS = parity_fixture_folders(is_fcclip_fixture)
FEATURES, LOGITS, LOSS_RELATIVE = 2e-5, 1e-4, 1e-5


def test_fcclip_fixtures_are_found():
    assert FOLDERS, "no FC-CLIP parity fixture found (expected tests/fixtures/parity/fcclip_tiny or FGASEG_PARITY_FIXTURES)"


class Fixture:
    def __init__(self, folder):
        self.folder = folder
        self.config = json.loads((folder / "config.json").read_text())
        self.inputs = torch.load(folder / "inputs.pt", weights_only=False)
        self.outputs = torch.load(folder / "outputs.pt", weights_only=False)
        self.checkpoint = torch.load(folder / "checkpoint.pth", weights_only=True)
        self.model = convert_original_checkpoint(self.checkpoint, str(folder / "config.json"))
        # The original runs the text tower on all 77 positions; these tests compare its bits.
        self.model.config.trim_text_padding = False
        self.tokenizer = build_clip_tokenizer()
        self.test_text = self.text(self.inputs["test_classes"])
        self.train_text = self.text(self.inputs["train_classes"])

    def text(self, classes):
        text = self.model.build_text_inputs(self.tokenizer, classes)
        return {k: text[k] for k in ("input_ids", "attention_mask", "synonym_to_class", "seen_classes")}

    def batch(self, images):
        return normalised_batch(images, self.inputs["pixel_mean"], self.inputs["pixel_std"])

    def infer(self, images=None, output_sizes=None, batch_invariant=False, order="after", **config):
        model = self.model.eval()
        names = ("batch_invariant", "postprocess_order", *config)
        saved = {name: getattr(model.config, name) for name in names}
        for name, value in dict(batch_invariant=batch_invariant, postprocess_order=order, **config).items():
            setattr(model.config, name, value)
        images = images if images is not None else self.inputs["test_images"]
        pixels, mask = self.batch(images)
        try:
            with torch.no_grad():
                return model(pixels, pixel_mask=mask, target_sizes=output_sizes or self.inputs["test_output_hw"][: len(images)],
                             output_hidden_states=True, **self.test_text)
        finally:
            for name, value in saved.items():
                setattr(model.config, name, value)


@pytest.fixture(autouse=True)
def _one_thread():
    # One thread, as the fixture was recorded: this machine's kernels then give the recorded bits (measured: every
    # compared tensor exact). With several threads float rounding differs, and the ensemble's log-probabilities of
    # near-zero probabilities amplify it (2.8e-4 on a 1e-8-scale probability of image 1 at two threads).
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module", **fixture_params(FOLDERS))
def fx(request):
    torch.set_num_threads(1)
    return Fixture(require_fixture(request.param))


@pytest.fixture(scope="module")
def semantic(fx):
    return fx.infer()


# ----------------------------------------------------------------------------- conversion and text
def test_conversion_detects_fcclip_and_maps_every_tensor(fx, tmp_path):
    state, sd = fx.checkpoint["model"], fx.model.state_dict()
    assert detect_architecture(state, fx.config["cfg"]) == "fcclip"
    assert type(fx.model).__name__ == "FCCLIPModel" and fx.model.config.model_type == "fcclip"
    assert fx.model.dominant_projection is None and not any("dominant" in k for k in sd)
    qkv = state["sem_seg_head.predictor.transformer_self_attention_layers.2.self_attn.in_proj_weight"]
    for index, name in enumerate(("q_proj", "k_proj", "v_proj")):
        assert torch.equal(sd[f"decoder.layers.2.self_attn.{name}.weight"], qkv.chunk(3)[index])
    norm = state["sem_seg_head.predictor.transformer_self_attention_layers.1.norm.weight"]
    assert torch.equal(sd["decoder.layers.1.self_attn_layer_norm.weight"], norm)
    # Every checkpoint tensor but the derived no-object weights lands somewhere, unchanged in total.
    total = sum(v.double().sum() for k, v in state.items() if k != "criterion.empty_weight")
    assert abs(total - sum(v.double().sum() for v in sd.values())) < 1e-6 * abs(total)
    assert not any(p.requires_grad for p in fx.model.clip.parameters())
    # Sizes come from the shapes: 16 learned queries, DEC_LAYERS 4 -> 3 layers, no text queries.
    c = fx.model.config
    assert (c.num_queries, c.num_text_queries, len(fx.model.decoder.layers), c.num_attention_heads) == (16, 0, 3, 2)
    assert c.seen_class_names == fx.inputs["train_classes"] and c.postprocess_order == "after"
    fx.model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "fcclip" and saved["architectures"] == ["FCCLIPModel"]


def test_text_classifier_and_seen_classes(fx, semantic):
    s = fx.outputs["semantic"]
    tokens = fx.test_text["input_ids"]
    # open_clip pads with 0, the transformers tokenizer with end-of-text: the tokens before padding agree.
    assert torch.equal(torch.where(s["text_tokens"] == 0, tokens, s["text_tokens"]), tokens)
    assert torch.equal(semantic.text_classifier, s["text_classifier"])
    assert torch.bincount(fx.test_text["synonym_to_class"]).tolist() == s["num_templates"]
    assert fx.test_text["seen_classes"].long().tolist() == s["category_overlapping_mask"].tolist()
    with torch.no_grad():
        raw = fx.model.clip.text_embeddings(tokens, fx.test_text["attention_mask"])
    assert diff(raw, s["text_features_raw"]) < 1e-5


def test_backbone_features(fx, semantic):
    recorded = fx.outputs["semantic"]["backbone_features"]
    for name, ours in zip(("stem", "res2", "res3", "res4", "res5"), semantic.backbone_hidden_states):
        assert diff(ours, recorded[name]) < FEATURES, name
    assert torch.equal(recorded["clip_vis_dense"], recorded["res5"])


def test_pixel_decoder_on_recorded_features(fx, semantic):
    recorded = fx.outputs["semantic"]["backbone_features"]
    expected = fx.outputs["semantic"]["pixel_decoder"]
    with torch.no_grad():
        ours = fx.model.pixel_decoder([recorded[n] for n in ("res2", "res3", "res4", "res5")])
    assert diff(ours.mask_features, expected["mask_features"]) < FEATURES
    for a, b in zip(ours.multi_scale_features, expected["multi_scale_features"]):
        assert diff(a, b) < FEATURES
    assert diff(semantic.mask_features, expected["mask_features"]) < 5 * FEATURES


def _run_decoder_recording(fx):
    """The decoder on the recorded pixel-decoder outputs, with each sub-layer's output (post-norm: the norms'
    outputs) and each layer's memory mask recorded."""
    s = fx.outputs["semantic"]
    states = {"after_cross_attn": [], "after_self_attn": [], "after_ffn": []}
    masks, hooks = [], []
    for layer in fx.model.decoder.layers:
        for key, norm in zip(states, (layer.cross_attn_layer_norm, layer.self_attn_layer_norm, layer.final_layer_norm)):
            hooks.append(norm.register_forward_hook(lambda m, i, o, key=key: states[key].append(o.transpose(0, 1))))
        hooks.append(layer.cross_attn.register_forward_pre_hook(
            lambda m, a, kw: masks.append(kw["attn_mask"].clone()), with_kwargs=True))
    index = synonym_gather_index(fx.test_text["synonym_to_class"], len(s["num_templates"]))
    try:
        with torch.no_grad():
            classes, pred_masks = fx.model.decoder(
                s["pixel_decoder"]["multi_scale_features"], s["pixel_decoder"]["mask_features"],
                torch.zeros(2, 0, fx.model.config.hidden_dim), s["text_classifier"], index,
            )
    finally:
        for hook in hooks:
            hook.remove()
    return classes, pred_masks, states, masks


def test_decoder_layers_cross_then_self_attention_then_ffn(fx):
    """Q1: each layer's three sub-layer outputs, and Q2: the memory masks after the all-masked-row fix."""
    s = fx.outputs["semantic"]
    classes, masks, states, attn = _run_decoder_recording(fx)
    assert len(classes) == s["decoder_pred_logits"].shape[0] == 4
    for p in range(len(classes)):
        assert diff(classes[p], s["decoder_pred_logits"][p]) < LOGITS, p
        assert diff(masks[p], s["decoder_pred_masks"][p]) < FEATURES, p
    for key, recorded in s["decoder_layer_states"].items():
        assert diff(torch.stack(states[key]), recorded) < FEATURES, key
    heads = fx.model.config.num_attention_heads
    for ours, recorded in zip(attn, s["decoder_attn_masks"]):
        per_head = ours.view(recorded.shape[0], heads, *recorded.shape[1:])
        assert torch.equal(per_head[:, 0], recorded) and torch.equal(per_head[:, 1], recorded)


def test_every_decoder_prediction_end_to_end(fx, semantic):
    s = fx.outputs["semantic"]
    assert semantic.text_queries is None and semantic.dominant_indices is None
    for p in range(s["decoder_pred_logits"].shape[0]):
        assert diff(semantic.all_class_logits[p], s["decoder_pred_logits"][p]) < LOGITS, p
        assert diff(semantic.all_mask_logits[p], s["decoder_pred_masks"][p]) < LOGITS, p
    assert diff(semantic.class_queries_logits[..., :-1], s["in_vocab_logits"]) < LOGITS


def test_out_of_vocabulary_branch_and_ensemble(fx, semantic):
    s = fx.outputs["semantic"]
    assert diff(semantic.pooled_clip_embeds, s["pooled_clip_embedding"]) < FEATURES
    assert diff(semantic.out_vocab_logits, s["out_vocab_logits_with_void"]) < LOGITS
    assert diff(semantic.mask_class_logits, s["ensemble_mask_cls"]) < LOGITS
    ours = geometric_ensemble(s["decoder_pred_logits"][-1], s["out_vocab_logits"], s["category_overlapping_mask"].bool(), 0.4, 0.8)
    assert diff(ours, s["ensemble_mask_cls"]) < 1e-5


@pytest.mark.parametrize("order", ["after", "before"])
def test_semantic_maps_both_orders(fx, order):
    s = fx.outputs["semantic"]
    key = "sem_seg" if order == "after" else "sem_seg_postprocess_before"
    out = fx.infer(order=order)
    for ours, ref in zip(out.semantic_maps, s[key]):
        assert ours.shape == ref.shape and diff(ours, ref) < LOGITS
    exact = semantic_maps(s["ensemble_mask_cls"], s["decoder_pred_masks"][-1], s["padded_batch_shape"][-2:],
                          s["image_sizes"], fx.inputs["test_output_hw"], order=order)
    # From the recorded masks and ensemble: exact, but for one rounding of the einsum over cropped masks ("before").
    for ours, ref in zip(exact, s[key]):
        assert diff(ours, ref) < 1e-7


def _check_single(out, index, single):
    h, w = single["pred_masks"].shape[-2:]
    assert diff(out.class_queries_logits[index], single["pred_logits"]) < LOGITS
    assert diff(out.masks_queries_logits[index][:, :h, :w], single["pred_masks"]) < LOGITS
    assert diff(out.out_vocab_logits[index, :, :-1], single["out_vocab_logits"]) < LOGITS
    assert diff(out.mask_class_logits[index], single["ensemble_mask_cls"]) < LOGITS
    assert diff(out.semantic_maps[index], single["sem_seg"]) < LOGITS


def test_each_image_alone(fx):
    """`semantic_single`: each image run alone; and the default batch-invariant mode gives every image of the
    batch its single-image result (image 0 padded to 96 x 128 instead of the batch's 96 x 160)."""
    singles = fx.outputs["semantic_single"]
    for index, single in enumerate(singles):
        out = fx.infer(images=[fx.inputs["test_images"][index]], output_sizes=[fx.inputs["test_output_hw"][index]])
        _check_single(out, 0, single)
    out = fx.infer(batch_invariant=True)
    for index, single in enumerate(singles):
        _check_single(out, index, single)
    # The original's batched image 0 differs from its single run (padding is never masked, Q11).
    assert diff(singles[0]["pred_masks"], fx.outputs["semantic"]["decoder_pred_masks"][-1][0][:, :, :32]) > 0.1


def test_ensemble_on_valid_mask(fx, semantic):
    v = fx.outputs["semantic_ensemble_on_valid_mask_true"]
    out = fx.infer(ensemble_on_valid_mask=True)
    masks = torch.nn.functional.interpolate(out.masks_queries_logits, size=semantic.backbone_hidden_states[-1].shape[-2:],
                                            mode="bilinear", align_corners=False)
    assert torch.equal((masks > 0).flatten(2).sum(-1) > 0, v["valid_masking"])
    assert not v["valid_masking"].all()  # the flag matters on this fixture
    assert diff(out.mask_class_logits, v["ensemble_mask_cls"]) < LOGITS
    for ours, ref in zip(out.semantic_maps, v["sem_seg"]):
        assert diff(ours, ref) < LOGITS


def test_evaluation_uses_no_random_numbers(fx):
    """Q16: no dominant-category crop, nothing random: the global RNG is untouched and reseeding changes nothing."""
    torch.manual_seed(0)
    state = torch.get_rng_state()
    first = fx.infer()
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(123)
    second = fx.infer()
    assert torch.equal(first.mask_class_logits, second.mask_class_logits)


# ----------------------------------------------------------------------------- training
def train_inputs(fx):
    pixels, _ = fx.batch(fx.inputs["train_images"])
    instances = fx.inputs["train_mapper_instances"]
    return dict(pixel_values=pixels, **{k: v for k, v in fx.train_text.items() if k != "seen_classes"},
                mask_labels=[i["gt_masks"] for i in instances], class_labels=[i["gt_classes"] for i in instances])


def _close(ours: float, reference: float) -> bool:
    return abs(ours - reference) <= LOSS_RELATIVE * abs(reference)


def test_training_loss_end_to_end(fx):
    train = fx.outputs["train"]
    out, calls, rand = run_recorded_training(fx, train_inputs(fx))
    check_training_predictions(fx, out, calls, rand, LOGITS)
    for key, value in train["losses_weighted"].items():
        assert _close(out.loss_dict[key].item(), value.item()), key
    assert _close(out.loss.item(), train["total_loss"].item())


def test_loss_on_recorded_predictions_is_exact(fx):
    train = fx.outputs["train"]
    inputs = train_inputs(fx)
    out = {
        "class_queries_logits": train["decoder_pred_logits"][-1], "masks_queries_logits": train["decoder_pred_masks"][-1],
        "all_class_logits": tuple(train["decoder_pred_logits"]), "all_mask_logits": tuple(train["decoder_pred_masks"]),
    }
    criterion = fx.model.criterion(len(fx.inputs["train_classes"]))
    calls, restore = record_matches(criterion)
    try:
        with ReplayedRand(fx.inputs["point_rand_seed"]):
            total, weighted = fx.model._loss(out, inputs["mask_labels"], inputs["class_labels"],
                                             tuple(train["padded_batch_shape"][-2:]), len(fx.inputs["train_classes"]))
    finally:
        restore()
    check_matches(calls, train["matcher_indices"])
    for key, value in train["losses_weighted"].items():
        assert torch.equal(weighted[key], value), key
    assert torch.equal(criterion.empty_weight, train["empty_weight"])
    assert _close(total.item(), train["total_loss"].item())


# ----------------------------------------------------------------------------- the converter beyond the fixture
def _spread(model, seed):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            fan_in = math.prod(param.shape[1:]) if param.dim() > 1 else 1
            param.copy_(torch.randn(param.shape, generator=generator) / math.sqrt(fan_in))
    return model.eval()


@pytest.mark.parametrize("sizes", [
    # hidden_dim != feature_size: the decoder's input projections become 1x1 convolutions (Q13).
    dict(feature_size=32, hidden_dim=64, mask_feature_size=64, num_attention_heads=4, encoder_layers=1,
         encoder_feedforward_dim=48, dim_feedforward=96, decoder_layers=3, num_learned_queries=7),
    dict(feature_size=64, hidden_dim=64, mask_feature_size=64, num_attention_heads=1, encoder_layers=3,
         encoder_feedforward_dim=32, dim_feedforward=16, decoder_layers=6, num_learned_queries=5),
], ids=["input-projections", "deeper"])
def test_converter_infers_every_size_from_the_shapes(fx, sizes):
    """A random FC-CLIP of other sizes, written under the original key names and converted with the fixture's cfg
    (whose sizes are all different): the sizes come from the tensors, every tensor round-trips, outputs agree."""
    from fgaseg_hf import FCCLIPConfig, FCCLIPModel

    values = {k: v for k, v in fx.model.config.to_dict().items() if k in FCCLIPConfig().to_dict()}
    values.update(sizes, vision_config=dict(hidden_sizes=[8, 16, 24, 40], depths=[1, 2, 1, 1], layer_norm_eps=1e-6),
                  vision_head_hidden_size=24)
    values.pop("transformers_version", None)
    reference = _spread(FCCLIPModel(FCCLIPConfig(**values)), seed=len(sizes) + sizes["decoder_layers"])
    original = {"model": {**original_state_dict(reference), "criterion.empty_weight": torch.ones(7)}}
    assert "backbone.add_tgt_em.weight" not in original["model"]
    converted = convert_original_checkpoint(original, str(fx.folder / "config.json"))
    for key in (*sizes, "num_text_queries", "decoder_self_attention"):
        assert getattr(converted.config, key) == getattr(reference.config, key), key
    assert converted.config.vision_config.hidden_sizes == [8, 16, 24, 40]
    expected = reference.state_dict()
    assert set(converted.state_dict()) == set(expected)
    assert all(torch.equal(v, expected[k]) for k, v in converted.state_dict().items())
    reference.config.trim_text_padding = converted.config.trim_text_padding = True  # a run-time choice, not in the cfg
    pixels, mask = fx.batch(fx.inputs["test_images"][1:])
    text = fx.text(fx.inputs["test_classes"][:3])
    with torch.no_grad():
        a = reference(pixels, pixel_mask=mask, **text)
        b = converted(pixels, pixel_mask=mask, **text)
    assert torch.equal(a.logits, b.logits) and a.class_queries_logits.shape[1] == sizes["num_learned_queries"]


def test_converter_errors_are_one_line(fx):
    state = dict(fx.checkpoint["model"])
    config = str(fx.folder / "config.json")
    bad = {**state, "sem_seg_head.predictor.mystery.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"unknown checkpoint keys: sem_seg_head\.predictor\.mystery\.weight") as err:
        convert_original_checkpoint({"model": bad}, config)
    assert "\n" not in str(err.value)
    shaped = {**state, "sem_seg_head.predictor.query_feat.weight": torch.zeros(5, 32)}
    with pytest.raises(ValueError, match=r"mis-shaped tensors .*decoder\.query_feat\.weight \(5, 32\) vs \(16, 32\)"):
        convert_original_checkpoint({"model": shaped}, config)
    neither = {k: v for k, v in state.items() if "transformer_self_attention_layers" not in k}
    with pytest.raises(ValueError, match="neither ITA's text-query projection .* nor FC-CLIP's decoder self-attention"):
        convert_original_checkpoint({"model": neither}, config)
    with pytest.raises(ValueError, match="META_ARCHITECTURE is 'CATSeg', not 'FCCLIP'"):
        convert_original_checkpoint({"model": state}, {"MODEL": {"META_ARCHITECTURE": "CATSeg"}})


def test_checkpoint_file_with_trainer_state_converts_the_same(fx, tmp_path):
    """A detectron2 checkpoint file as training writes it (model + optimizer + scheduler + iteration), read
    weights-only, converts to the same model."""
    path = tmp_path / "model_final.pth"
    torch.save({"model": fx.checkpoint["model"], "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]},
                "scheduler": {"last_epoch": 3}, "iteration": 3}, path)
    model = convert_original_checkpoint(str(path), str(fx.folder / "config.json"))
    reference = fx.model.state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in model.state_dict().items())
