"""ITAModel on tiny random configurations: save / load, remote code, batch invariance, custom vocabularies,
frozen CLIP, caching and the small building blocks."""

from __future__ import annotations

import math
import textwrap

import pytest
import torch
from conftest import VOCAB, run_without_package, tiny_tokenizer
from transformers import AutoConfig, AutoModel, AutoModelForSemanticSegmentation

from fgaseg_hf import ITAConfig, ITAModel, available_ita_presets
from fgaseg_hf.ita_decoder import classification_logits, synonym_gather_index
from fgaseg_hf.ita_inference import geometric_ensemble

CLASSES = ["sky", "car, auto", "road, street", "tree"]


def tiny_ita_config(**overrides) -> ITAConfig:
    values = dict(
        vision_config=dict(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], layer_norm_eps=1e-6),
        text_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, projection_dim=32,
            vocab_size=VOCAB, max_position_embeddings=16, bos_token_id=VOCAB - 2, eos_token_id=VOCAB - 1,
            pad_token_id=VOCAB - 1, hidden_act="gelu",
        ),
        clip_image_size=32, feature_size=32, mask_feature_size=32, encoder_layers=1, encoder_feedforward_dim=64,
        num_attention_heads=2, hidden_dim=32, dim_feedforward=64, decoder_layers=3, num_learned_queries=4,
        num_text_queries=20, prompt_templates=["a {}", "the {}"], seen_class_names=["sky", "car"],
        train_num_points=64,
    )
    values.update(overrides)
    return ITAConfig(**values)


def make_ita(seed: int = 0, **overrides) -> ITAModel:
    """A tiny ITA whose random weights give clearly different masks and classes per query."""
    torch.manual_seed(seed)
    model = ITAModel(tiny_ita_config(**overrides))
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "layer_scale" in name:
                param.fill_(0.5)
            elif name.endswith("logit_scale"):
                param.fill_(3.0)
            elif param.dim() > 1 and "embedding" not in name and "query" not in name and "level_embed" not in name:
                fan_in = math.prod(param.shape[1:])
                param.copy_(torch.randn(param.shape, generator=generator) / math.sqrt(fan_in))
            elif param.dim() > 1 or "level_embed" in name:
                param.copy_(torch.randn(param.shape, generator=generator))
    return model.eval()


def text_inputs(model, classes=CLASSES) -> dict:
    inputs = model.build_text_inputs(tiny_tokenizer(), classes)
    inputs.pop("dominant_names")
    return inputs


def images(*sizes, seed: int = 3):
    """Normalised images of the given sizes zero padded on one canvas (multiple of 32), and the pixel mask."""
    generator = torch.Generator().manual_seed(seed)
    height = -(-max(h for h, _ in sizes) // 32) * 32
    width = -(-max(w for _, w in sizes) // 32) * 32
    pixels = torch.zeros(len(sizes), 3, height, width)
    mask = torch.zeros(len(sizes), height, width, dtype=torch.long)
    for index, (h, w) in enumerate(sizes):
        pixels[index, :, :h, :w] = torch.randn(3, h, w, generator=generator)
        mask[index, :h, :w] = 1
    return pixels, mask


def run(model, pixels, mask=None, classes=CLASSES, **kwargs):
    with torch.no_grad():
        return model(pixels, pixel_mask=mask, **text_inputs(model, classes), **kwargs)


# ----------------------------------------------------------------------------- save / load
def test_save_load_round_trip_gives_identical_outputs(tmp_path):
    model = make_ita()
    pixels, mask = images((64, 64), (40, 56))
    before = run(model, pixels, mask)
    model.save_pretrained(tmp_path)
    config = (tmp_path / "config.json").read_text()
    assert '"AutoModelForSemanticSegmentation": "modeling_ita.ITAModel"' in config
    assert (tmp_path / "modeling_ita.py").is_file() and (tmp_path / "ita_decoder.py").is_file()
    loaded = ITAModel.from_pretrained(tmp_path).eval()
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert not any(p.requires_grad for p in loaded.clip.parameters())
    after = run(loaded, pixels, mask)
    assert torch.equal(before.logits, after.logits)
    assert torch.equal(before.mask_class_logits, after.mask_class_logits)
    assert type(AutoConfig.from_pretrained(tmp_path)) is ITAConfig
    assert type(AutoModel.from_pretrained(tmp_path)) is ITAModel
    assert type(AutoModelForSemanticSegmentation.from_pretrained(tmp_path)) is ITAModel


def test_trust_remote_code_in_a_process_that_cannot_import_the_package(tmp_path):
    model = make_ita()
    pixels, _ = images((64, 64))
    inputs = text_inputs(model)
    model.save_pretrained(tmp_path / "model")
    torch.save({"pixels": pixels, **inputs}, tmp_path / "inputs.pt")
    expected = run(model, pixels).logits
    script = textwrap.dedent(
        f"""
        import torch
        from transformers import AutoModelForSemanticSegmentation
        model = AutoModelForSemanticSegmentation.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True).eval()
        assert "fgaseg_hf" not in type(model).__module__, type(model).__module__
        inputs = torch.load({str(tmp_path / "inputs.pt")!r})
        pixels = inputs.pop("pixels")
        with torch.no_grad():
            torch.save(model(pixels, **inputs).logits, {str(tmp_path / "out.pt")!r})
        """
    )
    run_without_package(script, tmp_path)
    assert torch.equal(torch.load(tmp_path / "out.pt"), expected)


# ----------------------------------------------------------------------------- batch invariance
def test_an_image_alone_equals_the_image_in_a_padded_batch():
    model = make_ita()
    small, big = (40, 56), (64, 96)
    batch_pixels, batch_mask = images(small, big)
    alone_pixels, alone_mask = batch_pixels[:1, :, :64, :64], batch_mask[:1, :64, :64]
    targets = [(30, 42), (50, 70)]
    batched = run(model, batch_pixels, batch_mask, target_sizes=targets)
    alone = run(model, alone_pixels, alone_mask, target_sizes=targets[:1])
    assert torch.equal(batched.dominant_indices[0], alone.dominant_indices[0])
    for key in ("class_queries_logits", "out_vocab_logits", "mask_class_logits", "dominant_probs"):
        assert torch.allclose(getattr(batched, key)[0], getattr(alone, key)[0], atol=1e-5), key
    assert torch.allclose(batched.masks_queries_logits[0, :, :16, :16], alone.masks_queries_logits[0], atol=1e-5)
    assert torch.allclose(batched.logits[0, :, :64, :64], alone.logits[0], atol=1e-5)
    assert torch.allclose(batched.semantic_maps[0], alone.semantic_maps[0], atol=1e-5)
    assert torch.equal(model.post_process_semantic_segmentation(batched)[0], model.post_process_semantic_segmentation(alone)[0])
    # The original's behaviour (one padded canvas for the whole batch) is kept as an option, and differs.
    model.config.batch_invariant = False
    shared = run(model, batch_pixels, batch_mask, target_sizes=targets)
    assert (shared.class_queries_logits[0] - alone.class_queries_logits[0]).abs().max() > 1e-4


# ----------------------------------------------------------------------------- vocabularies
def test_custom_vocabulary_with_fewer_than_twenty_names_is_permutation_equivariant():
    """Names in no table, 6 dominant-vocabulary entries (< 20 text slots): every entry becomes a text query in
    probability order, and permuting the classes permutes the output classes and nothing else."""
    model = make_ita()
    pixels, mask = images((64, 64), (48, 64))
    classes = ["zebra, striped horse", "quokka", "axolotl", "fjord"]
    out = run(model, pixels, mask, classes=classes)
    vocabulary = 5 + 1  # synonyms + "other"
    assert out.dominant_indices.shape == (2, vocabulary)
    assert out.class_queries_logits.shape == (2, vocabulary + 4, len(classes) + 1)
    for probs, order in zip(out.dominant_probs, out.dominant_indices):
        assert sorted(order.tolist()) == list(range(vocabulary))
        assert torch.all(probs[order][:-1] >= probs[order][1:])
    permutation = [2, 0, 3, 1]
    permuted = run(model, pixels, mask, classes=[classes[i] for i in permutation])
    # The dominant vocabulary is ranked by probability, so the same names fill the same text slots.
    names = model.build_text_inputs(tiny_tokenizer(), classes)["dominant_names"]
    names_p = model.build_text_inputs(tiny_tokenizer(), [classes[i] for i in permutation])["dominant_names"]
    assert [[names[i] for i in row] for row in out.dominant_indices.tolist()] == [
        [names_p[i] for i in row] for row in permuted.dominant_indices.tolist()
    ]
    columns = permutation + [len(classes)]
    assert torch.allclose(permuted.class_queries_logits, out.class_queries_logits[..., columns], atol=1e-5)
    assert torch.allclose(permuted.logits, out.logits[:, permutation], atol=1e-5)


def test_precomputed_text_embeddings_and_dominant_indices_match_token_ids():
    model = make_ita()
    pixels, _ = images((64, 64))
    inputs = text_inputs(model)
    out = run(model, pixels)
    text_embeds = out.text_classifier[:-1]
    vocabulary = model.dominant_vocabulary(inputs["dominant_input_ids"], inputs["dominant_attention_mask"])
    with torch.no_grad():
        again = model(pixels, text_embeds=text_embeds, synonym_to_class=inputs["synonym_to_class"],
                      dominant_text_embeds=vocabulary, dominant_indices=out.dominant_indices,
                      seen_classes=inputs["seen_classes"])
    assert torch.equal(again.logits, out.logits)
    assert again.dominant_probs is None


def test_seen_classes_follow_the_training_synonyms():
    model = make_ita()
    inputs = model.build_text_inputs(tiny_tokenizer(), ["sky", "automobile, car", "street", "tree"])
    assert inputs["seen_classes"].tolist() == [True, True, False, False]
    assert inputs["synonym_to_class"].tolist() == [0, 1, 1, 2, 3]
    assert inputs["dominant_names"] == ["sky", "automobile", "car", "street", "tree", "other"]
    assert inputs["input_ids"].shape[0] == 5 * 2


def test_text_embeddings_are_cached_per_vocabulary_and_refreshed_on_new_weights():
    model = make_ita()
    ids = text_inputs(model)["dominant_input_ids"]
    first = model.clip.text_embeddings(ids)
    assert model.clip.text_embeddings(ids) is first
    state = {k: v.clone() * 2 for k, v in model.clip.text_model.state_dict().items()}
    model.clip.text_model.load_state_dict(state)
    refreshed = model.clip.text_embeddings(ids)
    assert refreshed is not first and not torch.allclose(refreshed, first)


# ----------------------------------------------------------------------------- training
def test_only_the_head_gets_gradients():
    model = make_ita(train_num_points=32)
    pixels, mask = images((64, 64), (64, 48))
    labels = torch.zeros(2, 64, 64, dtype=torch.long)
    labels[:, 20:] = 1
    labels[:, :, 40:] = 3
    mask_labels = [torch.stack([labels[i] == c for c in (0, 1, 3)]).float() for i in range(2)]
    class_labels = [torch.tensor([0, 1, 3])] * 2
    model.train()
    out = model(pixels, pixel_mask=mask, **text_inputs(model), mask_labels=mask_labels, class_labels=class_labels)
    assert out.logits is None and torch.isfinite(out.loss)
    assert len(out.loss_dict) == 3 * model.config.decoder_layers
    assert out.loss == sum(out.loss_dict.values())
    out.loss.backward()
    assert model.clip.training is False
    for name, param in model.named_parameters():
        if name.startswith("clip."):
            assert param.grad is None and not param.requires_grad, name
        else:
            assert param.grad is not None and param.grad.abs().sum() > 0, name


# ----------------------------------------------------------------------------- building blocks
def test_classification_takes_the_max_over_each_class_synonyms():
    generator = torch.Generator().manual_seed(0)
    embeds = torch.randn(2, 3, 8, generator=generator)
    classifier = torch.nn.functional.normalize(torch.randn(6, 8, generator=generator), dim=-1)
    synonym_to_class = torch.tensor([1, 0, 1, 2, 1])  # not grouped
    logits = classification_logits(embeds, classifier, torch.tensor(math.log(10.0)), synonym_gather_index(synonym_to_class, 3))
    cosine = 10.0 * torch.nn.functional.normalize(embeds, dim=-1) @ classifier.T
    expected = torch.stack([cosine[..., [1]].amax(-1), cosine[..., [0, 2, 4]].amax(-1), cosine[..., [3]].amax(-1), cosine[..., 5]], -1)
    assert torch.allclose(logits, expected, atol=1e-6)


def test_ensemble_keeps_the_void_probability_and_weights_seen_classes_by_alpha():
    generator = torch.Generator().manual_seed(0)
    pred, out_vocab = torch.randn(1, 4, 4, generator=generator), torch.randn(1, 4, 3, generator=generator)
    seen = torch.tensor([True, False, True])
    result = geometric_ensemble(pred, out_vocab, seen, 0.4, 0.8).exp()
    void = pred.softmax(-1)[..., -1]
    assert torch.allclose(result[..., -1], void + 1e-8, atol=1e-6)
    p_in, p_out = pred[..., :-1].softmax(-1), out_vocab.softmax(-1)
    weight = torch.tensor([0.4, 0.8, 0.4])
    mixed = (p_in ** (1 - weight) * p_out**weight)
    expected = mixed / mixed.sum(-1, keepdim=True) * (1 - void[..., None])
    assert torch.allclose(result[..., :-1], expected + 1e-8, atol=1e-6)


def test_shipped_preset():
    assert "ita_convnext_large_d_320" in available_ita_presets()
    config = ITAConfig.from_preset("ita_convnext_large_d_320")
    assert config.vision_config.hidden_sizes == [192, 384, 768, 1536] and config.vision_config.depths == [3, 3, 27, 3]
    assert config.text_config.num_hidden_layers == 16 and config.text_config.hidden_act == "gelu"
    assert config.projection_dim == 768 and config.head_hidden_size == 1536
    assert (config.num_learned_queries, config.num_text_queries, config.num_queries) == (180, 20, 200)
    assert (config.class_weight, config.mask_weight, config.dice_weight, config.no_object_weight) == (2.0, 5.0, 5.0, 0.1)
    assert (config.geometric_ensemble_alpha, config.geometric_ensemble_beta) == (0.4, 0.8)
    assert config.batch_invariant is True and config.postprocess_order == "before"
    with pytest.raises(ValueError, match="dominant_crop_mode"):
        tiny_ita_config(dominant_crop_mode="random")


def test_preset_seen_classes_are_coco_panoptic_with_synonyms():
    """The released recipe trains on COCO panoptic: its 133 classes (FC-CLIP's synonym lists) are the seen ones, so a
    class sharing any synonym is weighted by alpha and any other by beta."""
    from fgaseg_hf.conversion_ita import training_classes_of
    from fgaseg_hf.processing_ita import vocabulary_layout

    seen = ITAConfig.from_preset("ita_convnext_large_d_320").seen_class_names
    assert len(seen) == 133 and seen[0].startswith("person, child") and seen[-1] == "rug"
    names = ["wall", "person, individual", "spaceship", "sofa, couch", "windowpane, window", "chandelier"]
    layout = vocabulary_layout(names, ["a {}"], seen_class_names=seen)
    assert layout["seen_classes"].tolist() == [True, True, False, True, True, False]
    assert training_classes_of({"DATASETS": {"TRAIN": ["openvocab_coco_2017_train_panoptic_with_sem_seg"]}}) == seen
    assert training_classes_of({"DATASETS": {"TRAIN": ["my_dataset"]}}) == []
