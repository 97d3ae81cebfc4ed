"""What transformers' own test suite and `Trainer` expect of a model, checked for every model family with
transformers' testing utilities: save / load, dtype and device_map loading, eager vs SDPA, gradient checkpointing,
return_dict, hidden states and attentions, `requires_grad` after every loading path (remote code included),
`Trainer.predict` / `evaluate` with the default `label_names`, pipeline batching and torch.compile.

A family is one line of `FAMILIES`: a tiny config factory and the model class (a subclass of `FGASegModel` or
`ITAModel`, whose inputs the helpers below build).
"""

from __future__ import annotations

import math
import textwrap
from functools import partial

import numpy as np
import pytest
import torch
from conftest import VOCAB, run_without_package, tiny_config, tiny_processor, tiny_tokenizer
from PIL import Image
from test_modeling_ita import tiny_ita_config
from transformers import AutoModel, CLIPModel, Trainer, TrainingArguments, pipeline
from transformers.testing_utils import torch_device

from fgaseg_hf import (
    CATSegConfig,
    CATSegModel,
    FCCLIPConfig,
    FCCLIPModel,
    FGASegModel,
    ITAConfig,
    ITAModel,
    ITAProcessor,
)
from fgaseg_hf.configuration_catseg import CATSEG_SWITCHES

def tiny_ita_sizes_config(config_class=ITAConfig, **fixed):
    """The tiny ITA of test_modeling_ita at a small test size, as `config_class` (whose own `fixed` values win)."""
    values = tiny_ita_config(min_size_test=48, max_size_test=96).to_dict()
    for key in ("model_type", "transformers_version", *fixed):
        values.pop(key, None)
    return config_class(**values)


def tiny_catseg_config():
    values = tiny_config().to_dict()
    for key in ("model_type", "transformers_version", *CATSEG_SWITCHES):
        values.pop(key, None)
    return CATSegConfig(**values)


FAMILIES = {
    "fgaseg": (tiny_config, FGASegModel),
    "ita": (tiny_ita_sizes_config, ITAModel),
    "catseg": (tiny_catseg_config, CATSegModel),
    "fcclip": (partial(tiny_ita_sizes_config, FCCLIPConfig, num_text_queries=0, decoder_self_attention=True,
                       dominant_extra_names=[], postprocess_order="before"), FCCLIPModel),
}
NAMES = ["sky", "road", "car", "tree"]
IMAGES = [Image.fromarray(np.random.default_rng(s).integers(0, 256, shape, dtype=np.uint8))
          for s, shape in ((3, (45, 70, 3)), (4, (80, 33, 3)))]

def is_fgaseg(model) -> bool:
    return isinstance(model, FGASegModel)


def build(name: str, seed: int = 0):
    """A tiny model of a family with spread random weights (clearly different scores per class) and a default
    vocabulary, in eval mode."""
    factory, model_class = FAMILIES[name]
    torch.manual_seed(seed)
    model = model_class(factory())
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            if "layer_scale" in param_name:
                param.fill_(0.5)
            elif param_name.endswith("logit_scale"):
                param.fill_(3.0)
            elif param.dim() > 1 and not any(k in param_name for k in ("embedding", "query", "level_embed")):
                param.copy_(torch.randn(param.shape, generator=generator) / math.sqrt(math.prod(param.shape[1:])))
    if is_fgaseg(model):
        model.set_default_vocabulary(NAMES, tiny_processor(model.config).tokenize_vocabulary(NAMES)["input_ids"])
    else:
        model.set_default_vocabulary(NAMES, tiny_tokenizer())
    return model.eval()


def processor_of(model):
    if is_fgaseg(model):
        return tiny_processor(model.config)
    return ITAProcessor.from_model_config(model.config, tiny_tokenizer())


def pixels(model, batch: int = 2, seed: int = 5) -> torch.Tensor:
    size = model.config.clip_resolution if is_fgaseg(model) else 64
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def labels_for(model, batch: int = 2, seed: int = 6) -> torch.Tensor:
    size = model.config.clip_resolution if is_fgaseg(model) else 64
    labels = torch.randint(0, len(NAMES), (batch, size, size), generator=torch.Generator().manual_seed(seed))
    labels[:, :4] = model.config.ignore_index
    return labels


def trainable(model) -> set[str]:
    return {name for name, param in model.named_parameters() if param.requires_grad}


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, tmp_path_factory):
    """(name, model, folder): the model saved with its processor."""
    model = build(request.param)
    folder = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(folder)
    processor_of(model).save_pretrained(folder)
    return request.param, model, folder


# ----------------------------------------------------------------------------- loading
def test_save_load_round_trip_and_requires_grad_after_every_loading_path(family, tmp_path):
    name, model, folder = family
    expected = trainable(model)
    assert 0 < len(expected) < len(list(model.parameters()))  # a real policy: part of the model is frozen
    loaded = type(model).from_pretrained(folder)
    with_info, info = type(model).from_pretrained(folder, output_loading_info=True)
    auto = AutoModel.from_pretrained(folder)
    assert type(auto) is type(model)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    for other in (loaded, with_info, auto):
        assert trainable(other) == expected
        for (key, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items()):
            assert torch.equal(a, b), key
    script = textwrap.dedent(
        f"""
        import json
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True)
        assert "fgaseg_hf" not in type(model).__module__, type(model).__module__
        names = sorted(n for n, p in model.named_parameters() if p.requires_grad)
        open({str(tmp_path / "trainable.json")!r}, "w").write(json.dumps(names))
        """
    )
    run_without_package(script, tmp_path)
    import json

    assert set(json.loads((tmp_path / "trainable.json").read_text())) == expected


def test_fgaseg_policy_holds_after_loading_for_every_policy(tmp_path):
    model = build("fgaseg")
    model.apply_finetune_policy("full")
    model.save_pretrained(tmp_path)
    loaded = FGASegModel.from_pretrained(tmp_path)
    assert loaded.config.clip_finetune == "full" and trainable(loaded) == trainable(model)
    assert trainable(loaded) != trainable(build("fgaseg"))  # "full" differs from the default "attention"


def test_fgaseg_from_a_plain_clip_folder_loads_the_clip_and_initialises_the_rest(tmp_path):
    torch.manual_seed(0)
    clip_config = tiny_config().clip_config
    clip = CLIPModel(clip_config)
    with torch.no_grad():
        clip.logit_scale.fill_(1.234)
    clip.save_pretrained(tmp_path)
    model, info = FGASegModel.from_pretrained(tmp_path, output_loading_info=True, image_size=64, window_size=4)
    assert model.config.clip_config.vision_config.hidden_size == clip_config.vision_config.hidden_size
    assert model.config.image_size == 64 and not info["unexpected_keys"]
    saved = clip.state_dict()
    assert set(model.clip.state_dict()) == set(saved)
    for key, value in model.clip.state_dict().items():
        assert torch.equal(value, saved[key]), key
    head = {n: p for n, p in model.named_parameters() if not n.startswith("clip.")}
    assert set(info["missing_keys"]) >= set(head)
    # Freshly initialised by `_init_weights`: unit norms, zero biases, convolution weights at initializer_range.
    std = model.config.initializer_range
    for param_name, param in head.items():
        assert torch.isfinite(param).all(), param_name
    assert torch.equal(model.decoder.get_submodule(_first_norm(model.decoder)).weight,
                       torch.ones_like(model.decoder.get_submodule(_first_norm(model.decoder)).weight))
    conv = model.guidance_upsample1
    assert torch.count_nonzero(conv.bias) == 0 and abs(float(conv.weight.detach().std()) - std) < 0.25 * std
    assert trainable(model) == trainable(FGASegModel(model.config))  # the fine-tuning policy holds
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64), input_ids=torch.tensor([[VOCAB - 2, 5, VOCAB - 1]] * 3))
    assert out.logits.shape == (1, 3, 32, 32) and torch.isfinite(out.logits).all()


def _first_norm(module) -> str:
    return next(n for n, m in module.named_modules() if isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm)))


def test_dtype_and_device_map_loading(family):
    name, model, folder = family
    inputs = pixels(model)
    with torch.no_grad():
        reference = model(inputs).logits
    placed = type(model).from_pretrained(folder, device_map=torch_device)
    assert {p.device.type for p in placed.parameters()} == {torch.device(torch_device).type}
    assert trainable(placed) == trainable(model)
    with torch.no_grad():
        assert torch.allclose(placed(inputs.to(torch_device)).logits.cpu(), reference, atol=1e-5)
    half = type(model).from_pretrained(folder, dtype=torch.bfloat16)
    assert {p.dtype for p in half.parameters() if p.is_floating_point()} == {torch.bfloat16}
    assert trainable(half) == trainable(model)
    cast = type(model).from_pretrained(folder).to(torch.bfloat16)
    with torch.no_grad():
        # Loading in bfloat16 is casting the float32 model: the same outputs, bit for bit.
        assert torch.equal(half(inputs.bfloat16()).logits, cast(inputs.bfloat16()).logits)


def test_eager_and_sdpa_attention_agree(family):
    name, model, folder = family
    inputs = pixels(model)
    outputs = {}
    for implementation in ("eager", "sdpa"):
        loaded = type(model).from_pretrained(folder, attn_implementation=implementation)
        assert loaded.config._attn_implementation == implementation
        assert loaded.clip.text_model.config._attn_implementation == implementation
        with torch.no_grad():
            outputs[implementation] = loaded(inputs).logits
    assert torch.allclose(outputs["eager"], outputs["sdpa"], atol=1e-5)


# ----------------------------------------------------------------------------- forward conventions
def test_return_dict_from_the_config_and_per_call(family):
    name, model, folder = family
    inputs = pixels(model)
    loaded = type(model).from_pretrained(folder, return_dict=False)
    with torch.no_grad():
        as_tuple = loaded(inputs)
        as_dict = loaded(inputs, return_dict=True)
        reference = model(inputs).logits
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], as_dict.logits)
    assert torch.equal(as_dict.logits, reference)


def test_hidden_states_are_the_vision_towers_under_the_standard_name(family):
    name, model, folder = family
    inputs = pixels(model)
    with torch.no_grad():
        out = model(inputs, output_hidden_states=True)
        if is_fgaseg(model):
            reference = model.clip.vision_model(inputs, output_hidden_states=True, interpolate_pos_encoding=True)
            assert out.vision_hidden_states is out.hidden_states
            layers = model.config.clip_config.vision_config.num_hidden_layers
            assert len(out.hidden_states) == layers + 1
            # Every block but the last (FGA-Seg runs it in dense mode) is CLIP's own.
            for ours, theirs in zip(out.hidden_states[:-1], reference.hidden_states[:-1]):
                assert torch.allclose(ours, theirs, atol=1e-5)
        else:
            reference = model.clip.vision_model(inputs, output_hidden_states=True)
            assert out.backbone_hidden_states is out.hidden_states
            assert len(out.hidden_states) == len(reference.hidden_states) == 5
            for ours, theirs in zip(out.hidden_states, reference.hidden_states):
                assert torch.equal(ours, theirs)
        assert model(inputs).hidden_states is None


def test_clip_attentions_fall_back_to_eager_for_the_call(tmp_path):
    model = build("fgaseg")
    model.save_pretrained(tmp_path)
    sdpa = FGASegModel.from_pretrained(tmp_path, attn_implementation="sdpa")
    eager = FGASegModel.from_pretrained(tmp_path, attn_implementation="eager")
    inputs = pixels(model)
    ids = tiny_processor(model.config).tokenize_vocabulary(NAMES)["input_ids"]
    with torch.no_grad():
        plain = sdpa(inputs, input_ids=ids)
        out = sdpa(inputs, input_ids=ids, output_attentions=True)
        reference = eager.clip.vision_model(inputs, output_attentions=True, interpolate_pos_encoding=True)
    # The requested implementation is back after the call, and the results did not change.
    assert sdpa.clip.vision_model.config._attn_implementation == "sdpa"
    assert sdpa.clip.text_model.config._attn_implementation == "sdpa"
    assert plain.attentions is None and torch.allclose(out.logits, plain.logits, atol=1e-5)
    vision = model.config.clip_config.vision_config
    assert len(out.attentions) == vision.num_hidden_layers - 1  # the dense last block does not attend
    tokens = 1 + model.config.feature_resolution**2
    for ours, theirs in zip(out.attentions, reference.attentions):
        assert ours.shape == (2, vision.num_attention_heads, tokens, tokens)
        assert torch.allclose(ours, theirs, atol=1e-6)
        assert torch.allclose(ours.sum(-1), torch.ones(()), atol=1e-5)
    text = model.config.clip_config.text_config
    assert len(out.text_attentions) == text.num_hidden_layers
    weights = out.text_attentions[0]
    assert weights.shape[:2] == (len(NAMES) * model.config.num_templates, text.num_attention_heads)
    assert torch.count_nonzero(torch.triu(weights, diagonal=1)) == 0  # causal
    # Without a text-tower run (cached default vocabulary), no text attentions.
    with torch.no_grad():
        cached = sdpa(inputs, output_attentions=True)
    assert cached.text_attentions is None and len(cached.attentions) == vision.num_hidden_layers - 1


def test_gradient_checkpointing_recomputes_and_gives_the_same_gradients(family):
    name, model, folder = family
    model = type(model).from_pretrained(folder).train()
    inputs, labels = pixels(model), labels_for(model)
    layer_class = type(model.decoder.layers[0])
    calls = []
    # Pre-hooks on the layers' sub-modules: a recomputation calls the layer's `forward` (no hooks of the layer
    # itself) and stops as soon as it has what the backward needs (no post-hook of the last sub-module).
    hooks = [child.register_forward_pre_hook(lambda *_: calls.append(1))
             for m in model.modules() if isinstance(m, layer_class) for child in m.children()]
    gradients = []
    for enabled in (False, True):
        if enabled:
            model.activation_checkpointing_enable()
            assert model.is_activation_checkpointing
        model.zero_grad()
        calls.clear()
        torch.manual_seed(0)  # ITA's loss samples points at random
        model(inputs, labels=labels).loss.backward()
        gradients.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        gradients[-1]["calls"] = len(calls)
    for hook in hooks:
        hook.remove()
    assert gradients[1].pop("calls") > gradients[0].pop("calls")  # the layers ran again in the backward
    assert gradients[0].keys() == gradients[1].keys() and gradients[0]
    for key, grad in gradients[0].items():
        assert torch.allclose(gradients[1][key], grad, atol=1e-5), key


def test_torch_compile_gives_the_eager_outputs(family):
    name, model, folder = family
    inputs = pixels(model)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="eager")
    with torch.no_grad():
        assert torch.allclose(compiled(inputs).logits, model(inputs).logits, atol=1e-6)
    torch._dynamo.reset()


# ----------------------------------------------------------------------------- Trainer
class _Images(torch.utils.data.Dataset):
    """Only `pixel_values` and `labels`: the documented training interface of every family."""

    def __init__(self, model, count: int = 3):
        self.pixels, self.labels = pixels(model, count, seed=8), labels_for(model, count, seed=9)

    def __len__(self):
        return len(self.pixels)

    def __getitem__(self, index):
        return {"pixel_values": self.pixels[index], "labels": self.labels[index]}


def test_trainer_predict_and_evaluate_with_the_default_label_names(family, tmp_path):
    name, model, folder = family
    data = _Images(model)
    args = TrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=2, report_to="none", use_cpu=True,
                             disable_tqdm=True)
    trainer = Trainer(model=model, args=args)
    assert trainer.label_names == ["labels"]
    predicted = trainer.predict(data)
    with torch.no_grad():
        expected = torch.cat([model(data.pixels[i : i + 2], labels=data.labels[i : i + 2]).logits for i in (0, 2)])
    # `predictions` are the logits alone (every other output is in the config's keys_to_ignore_at_inference).
    assert isinstance(predicted.predictions, np.ndarray)
    assert np.allclose(predicted.predictions, expected.numpy(), atol=1e-5)
    assert np.array_equal(predicted.label_ids, data.labels.numpy())
    assert np.isfinite(predicted.metrics["test_loss"])
    assert np.isfinite(trainer.evaluate(data)["eval_loss"])


def test_keys_to_ignore_at_inference_cover_every_output_but_loss_and_logits(family):
    import dataclasses

    name, model, folder = family
    output_class = type(model(pixels(model)))
    names = {f.name for f in dataclasses.fields(output_class)} - {"loss", "logits"}
    assert names <= set(model.config.keys_to_ignore_at_inference)
    assert "logits" not in model.config.keys_to_ignore_at_inference


# ----------------------------------------------------------------------------- pipelines
@pytest.mark.parametrize("task", ["image-segmentation", "open-vocabulary-segmentation"])
def test_pipelines_batch_like_single_calls(family, task):
    """batch_size=2 gives each image's own result. transformers' image-segmentation pipeline concatenates the
    images' `pixel_values`, so it batches images of one size only (ITA keeps each image's aspect ratio); the
    open-vocabulary pipeline batches any sizes."""
    name, model, folder = family
    segmenter = pipeline(task, model=str(folder), trust_remote_code=task == "open-vocabulary-segmentation")
    if task == "open-vocabulary-segmentation":
        images, kwargs = IMAGES, {"candidate_labels": NAMES}
    else:
        images, kwargs = [IMAGES[0], IMAGES[0].transpose(Image.Transpose.ROTATE_180)], {}
    alone = [segmenter(image, **kwargs) for image in images]
    batched = segmenter(images, batch_size=2, **kwargs)
    assert len(batched) == len(images)
    for single, together in zip(alone, batched):
        assert single and {r["label"] for r in single} == {r["label"] for r in together}
        masks = {r["label"]: np.asarray(r["mask"]) for r in together}
        for result in single:
            # The batch changes float rounding (~1e-6) only: pixels whose two best classes are that close may
            # switch, nothing else.
            assert result["score"] == pytest.approx(next(r["score"] for r in together if r["label"] == result["label"]), abs=2e-3)
            assert np.mean(np.asarray(result["mask"]) != masks[result["label"]]) < 0.02


def test_ita_attn_implementation_does_not_reach_the_convnext_trunk(tmp_path):
    model = build("ita")
    model.save_pretrained(tmp_path)
    loaded = ITAModel.from_pretrained(tmp_path, attn_implementation="sdpa")
    assert loaded.clip.text_model.config._attn_implementation == "sdpa"
    assert loaded.clip.vision_model.config._attn_implementation == "eager"  # ConvNeXt's only one (no attention)


def test_ita_mask2former_targets_are_keyword_only_and_equal_the_labels():
    from fgaseg_hf.image_processing_ita import semantic_to_mask_targets

    model = build("ita")
    inputs, labels = pixels(model), labels_for(model)
    targets = [semantic_to_mask_targets(label, model.config.ignore_index) for label in labels]
    with torch.no_grad():
        torch.manual_seed(0)
        from_labels = model(inputs, labels=labels).loss
        torch.manual_seed(0)
        from_targets = model(inputs, mask_labels=[t[0] for t in targets], class_labels=[t[1] for t in targets]).loss
    assert torch.isfinite(from_labels) and torch.equal(from_labels, from_targets)
    with pytest.raises(ValueError, match="returns no attention weights"):
        model(inputs, output_attentions=True)
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['mask_label'\]"):
        model(inputs, mask_label=[])
