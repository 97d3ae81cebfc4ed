"""FGASegModel behaviour on tiny random configurations."""

from __future__ import annotations

import itertools
import textwrap

import pytest
import torch
import torch.nn.functional as F
from conftest import make_input_ids, make_model, run_without_package, tiny_config
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel, AutoModelForSemanticSegmentation

from fgaseg_hf import FGASegConfig, FGASegModel, available_presets
from fgaseg_hf.fgaseg_decoder import PRUNED_LOGIT

SIZE = 64


def images(batch: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- save / load
def test_save_load_round_trip_is_bit_exact(tmp_path):
    model = make_model()
    ids, x = make_input_ids(5), images(2)
    with torch.no_grad():
        before = model(x, ids).logits
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    loaded = FGASegModel.from_pretrained(tmp_path).eval()
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    with torch.no_grad():
        assert torch.equal(loaded(x, ids).logits, before)
    # Registered with the Auto classes on import.
    assert isinstance(AutoConfig.from_pretrained(tmp_path), FGASegConfig)
    assert type(AutoModel.from_pretrained(tmp_path)) is FGASegModel
    assert type(AutoModelForSemanticSegmentation.from_pretrained(tmp_path)) is FGASegModel


def test_trust_remote_code_in_a_process_that_cannot_import_the_package(tmp_path):
    model = make_model()
    ids, x = make_input_ids(4), images(1)
    model.save_pretrained(tmp_path / "model")
    torch.save({"ids": ids, "x": x}, tmp_path / "inputs.pt")
    with torch.no_grad():
        expected = model(x, ids).logits
    script = textwrap.dedent(
        f"""
        import torch
        from transformers import AutoModelForSemanticSegmentation
        model = AutoModelForSemanticSegmentation.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True).eval()
        assert "fgaseg_hf" not in type(model).__module__, type(model).__module__
        inputs = torch.load({str(tmp_path / "inputs.pt")!r})
        with torch.no_grad():
            torch.save(model(inputs["x"], inputs["ids"]).logits, {str(tmp_path / "out.pt")!r})
        """
    )
    run_without_package(script, tmp_path)
    assert torch.equal(torch.load(tmp_path / "out.pt"), expected)


# ----------------------------------------------------------------------------- batch invariance and pruning
def test_batch_invariance_with_per_image_pruning():
    model = make_model(inference_top_k=2)
    ids = make_input_ids(7)
    x = images(3)
    with torch.no_grad():
        batched = model(x, ids)
        singles = [model(x[i : i + 1], ids) for i in range(3)]
    pruned_somewhere = False
    for index, single in enumerate(singles):
        assert torch.equal(batched.kept_classes[index], single.kept_classes[0])
        assert torch.allclose(batched.logits[index], single.logits[0], atol=1e-5)
        pruned_somewhere |= not bool(single.kept_classes[0].all())
    assert pruned_somewhere, "the test should exercise pruning"
    # Pruned classes hold the pruned logit, kept ones do not.
    assert torch.all(batched.logits[~batched.kept_classes] == PRUNED_LOGIT)
    assert torch.all(batched.logits[batched.kept_classes] != PRUNED_LOGIT)


def test_pruning_keeps_every_pixels_top_k():
    """A class that is among some pixel's top-k auxiliary logits at every stage survives; with k >= T nothing is pruned."""
    model = make_model(inference_top_k=7)
    ids, x = make_input_ids(7), images(2)
    with torch.no_grad():
        eval_out = model(x, ids)
        unpruned = model(x, ids, labels=torch.zeros(2, 8, 8, dtype=torch.long))
    assert eval_out.kept_classes.all()
    assert torch.allclose(eval_out.logits, unpruned.logits, atol=1e-5)


# ----------------------------------------------------------------------------- every architecture variant
@pytest.mark.parametrize(
    "decoder_mode,fusion_mode,attention,templates",
    list(itertools.product(["fast", "no_fast"], ["cat", "add"], ["linear", "full"], [1, 3])),
)
def test_variants(decoder_mode, fusion_mode, attention, templates):
    template_list = ["a photo of a {}.", "a {} in the scene", "art of the {}."][:templates]
    model = make_model(
        decoder_mode=decoder_mode, fusion_mode=fusion_mode, class_attention_type=attention,
        prompt_templates=template_list, inference_top_k=8,
    )
    ids, x = make_input_ids(5, templates), images(2)
    labels = torch.randint(0, 5, (2, 40, 40), generator=torch.Generator().manual_seed(3))
    labels[:, :5] = 255
    with torch.no_grad():
        inference = model(x, ids, output_correlations=True)
        evaluated = model(x, ids, labels=labels)
    # One correlation channel per template: channel t is the cosine with template t's refined embedding.
    image = F.normalize(inference.image_embeds, dim=1)
    for t in range(templates):
        expected = torch.einsum("bchw,btc->bthw", image, F.normalize(inference.refined_text_embeds[:, :, t], dim=-1))
        assert torch.allclose(inference.correlation[:, t], expected, atol=1e-5)
    # k >= T: inference prunes nothing and equals the unpruned path used for the loss.
    assert torch.allclose(inference.logits, evaluated.logits, atol=1e-5)
    assert torch.isfinite(evaluated.loss)
    model.train()
    trained = model(x, ids, labels=labels)
    assert torch.allclose(trained.logits, evaluated.logits, atol=1e-5)  # no dropout; BatchNorm is projector-only
    expected_terms = {"loss_main", "loss_align"} | ({"loss_aux0", "loss_aux1", "loss_aux2"} if decoder_mode == "fast" else set())
    assert set(trained.loss_terms) == expected_terms
    weights = {"loss_aux0": 0.2, "loss_aux1": 1.0, "loss_aux2": 1.0, "loss_align": 0.02, "loss_main": 1.0}
    total = sum(weights[k] * v for k, v in trained.loss_terms.items())
    assert torch.allclose(trained.loss, total)
    trained.loss.backward()
    assert model.decoder.head.weight.grad is not None and model.decoder.head.weight.grad.abs().sum() > 0


def test_multi_template_embeddings_follow_the_class_major_layout():
    model = make_model(prompt_templates=["a {}.", "the {}."])
    ids = make_input_ids(3, 2)
    embeds = model.get_text_embeddings(ids)
    assert embeds.shape == (3, 2, 32)
    one = model.get_text_embeddings(ids[2:4])  # class 1: rows 1 * 2 + 0 and 1 * 2 + 1
    assert torch.allclose(embeds[1], one[0], atol=1e-6)


# ----------------------------------------------------------------------------- class truncation (pad_len)
def test_truncation_keeps_the_most_similar_classes_and_matches_a_direct_run():
    model = make_model(class_aggregation_length=4, inference_top_k=16)
    ids, x = make_input_ids(7), images(2)
    with torch.no_grad():
        out = model(x, ids, output_correlations=True)
        text = model.get_text_embeddings(ids)
        refined = model.pixel_text_attention(out.image_embeds, text)
        score = torch.einsum("bchw,btc->bthw", F.normalize(out.image_embeds, dim=1), F.normalize(refined[:, :, 0], dim=-1))
        chosen = score.flatten(2).amax(-1).topk(4, dim=-1).indices.sort(-1).values
        for b in range(2):
            assert torch.equal(out.kept_classes[b].nonzero().squeeze(1), chosen[b])
            dropped = ~out.kept_classes[b]
            assert torch.all(out.logits[b, dropped] == PRUNED_LOGIT)
            # Running the model on exactly the chosen classes gives the same logits (4 classes: no padding).
            direct = model(x[b : b + 1], text_embeds=text[chosen[b]])
            assert torch.allclose(direct.logits[0], out.logits[b, chosen[b]], atol=1e-5)


def test_padding_tokens_count_as_pad_len_minus_classes():
    """Class attention sees the learned padding token pad_len - T times: changing pad_len changes the output,
    and the padding token matters (zeroing it changes the output)."""
    ids, x = make_input_ids(3), images(1)
    a = make_model(class_aggregation_length=8)
    b = make_model(class_aggregation_length=16)
    with torch.no_grad():
        for layer in list(a.decoder.layers) + list(b.decoder.layers):
            layer.class_attention.padding_token.normal_()
        b.load_state_dict(a.state_dict())
        la, lb = a(x, ids).logits, b(x, ids).logits
    assert not torch.allclose(la, lb, atol=1e-4)


# ----------------------------------------------------------------------------- fine-tuning policies
@pytest.mark.parametrize("policy", ["attention", "full", "frozen", "all"])
def test_gradients_only_where_the_policy_allows(policy):
    model = make_model(clip_finetune=policy)
    model.train()
    ids, x = make_input_ids(4), images(2)
    labels = torch.randint(0, 4, (2, 16, 16))
    model(x, ids, labels=labels).loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    clip_trainable = {n for n in trainable if n.startswith("clip.")}
    if policy == "attention":
        expected = {
            f"clip.{tower}.encoder.layers.{i}.self_attn.{p}_proj.weight"
            for tower, layers in (("vision_model", 4), ("text_model", 2))
            for i in range(layers)
            for p in "qv"
        }
        # The dense last vision block never uses its query projection.
        expected.discard("clip.vision_model.encoder.layers.3.self_attn.q_proj.weight")
        assert clip_trainable == expected
    elif policy == "full":
        assert clip_trainable and all(".encoder.layers." in n for n in clip_trainable)
        assert "clip.vision_model.embeddings.patch_embedding.weight" not in clip_trainable
    elif policy == "frozen":
        assert not clip_trainable
    else:
        unused = {"clip.logit_scale"} | {f"clip.vision_model.encoder.layers.3.self_attn.{p}_proj.{w}" for p in "qk" for w in ("weight", "bias")}
        assert clip_trainable == {n for n, _ in model.named_parameters() if n.startswith("clip.")} - unused
    # Gradients reach exactly the trainable parameters.
    assert with_grad == trainable


# ----------------------------------------------------------------------------- default vocabulary
def test_default_vocabulary_runs_without_text_and_survives_save_load(tmp_path):
    model = make_model()
    ids, x = make_input_ids(4), images(1)
    model.set_default_vocabulary(["sky", "road", "car", "tree"], ids)
    assert model.config.id2label == {0: "sky", 1: "road", 2: "car", 3: "tree"}
    with torch.no_grad():
        expected = model(x, ids).logits
        assert torch.equal(model(x).logits, expected)
    model.save_pretrained(tmp_path)
    loaded = FGASegModel.from_pretrained(tmp_path).eval()
    assert loaded.config.id2label[2] == "car"
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, expected)


def test_stale_text_cache_is_never_used(tmp_path):
    model = make_model()
    ids, x = make_input_ids(4), images(1)
    model.set_default_vocabulary(["a", "b", "c", "d"], ids)
    with torch.no_grad():
        model.clip.text_model.encoder.layers[0].mlp.fc1.weight.add_(0.5)
        fresh = model(x, ids).logits
        assert torch.equal(model(x).logits, fresh)
    # A saved cache computed from other weights (here: text weights replaced in the file) is recomputed on load.
    model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    key = "clip.text_model.encoder.layers.1.mlp.fc2.weight"
    weights[key] = weights[key] * -1.0
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    loaded = FGASegModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        expected = loaded(x, ids).logits
        assert not torch.allclose(expected, fresh, atol=1e-4)
        assert torch.equal(loaded(x).logits, expected)


def test_default_vocabulary_recomputed_with_gradients_while_the_text_tower_trains():
    model = make_model(clip_finetune="attention")
    model.set_default_vocabulary(["a", "b", "c"], make_input_ids(3))
    model.train()
    out = model(images(1), labels=torch.zeros(1, 8, 8, dtype=torch.long))
    out.loss.backward()
    assert model.clip.text_model.encoder.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- clear errors
def test_errors_name_the_problem():
    model = make_model()
    ids = make_input_ids(3)
    with pytest.raises(ValueError, match=r"pixel_values must have shape \(batch_size, 3, 64, 64\)"):
        model(torch.randn(1, 3, 32, 32), ids)
    with pytest.raises(ValueError, match="floating-point"):
        model(torch.zeros(1, 3, SIZE, SIZE, dtype=torch.uint8), ids)
    with pytest.raises(TypeError, match="pixel_values must be a torch.Tensor"):
        model([[1.0]], ids)
    templated = make_model(prompt_templates=["a {}.", "the {}."])
    with pytest.raises(ValueError, match="not a positive multiple of the number of prompt templates"):
        templated(images(1), make_input_ids(3))
    with pytest.raises(ValueError, match="input_ids must be an integer tensor"):
        model(images(1), ids.float())
    with pytest.raises(ValueError, match=r"labels contain class ids \[3, 7\]"):
        model(images(1), ids, labels=torch.tensor([[[0, 3], [7, 255]]]))
    with pytest.raises(ValueError, match="labels must be an integer tensor"):
        model(images(1), ids, labels=torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="no vocabulary"):
        model(images(1))
    with pytest.raises(ValueError, match="duplicate class names"):
        model.set_default_vocabulary(["a", "b", "a"], ids)
    with pytest.raises(ValueError, match="text_embeds must have shape"):
        model(images(1), text_embeds=torch.randn(3, 32))


def test_config_validation_errors():
    with pytest.raises(ValueError, match="decoder_mode must be one of"):
        tiny_config(decoder_mode="fastest")
    with pytest.raises(ValueError, match=r"decoder_dims\[0\] \(32\) must equal hidden_dim / 2"):
        tiny_config(decoder_dims=[32, 16])
    with pytest.raises(ValueError, match="guidance_layer_indexes"):
        tiny_config(guidance_layer_indexes=[1, 3])
    with pytest.raises(ValueError, match="unknown prompt template set"):
        tiny_config(prompt_templates="imagenet_all")
    with pytest.raises(ValueError, match=r"inference_chunk_size must be >= 0"):
        tiny_config(inference_chunk_size=-1)


def test_presets_load_with_one_call():
    names = available_presets()
    assert {"vitb_384_fast_cat", "vitb_384_no_fast_add", "vitl_336_fast_cat", "vitl_336_no_fast_cat"} <= set(names)
    vitb = FGASegConfig.from_preset("vitb_384_fast_cat")
    assert (vitb.clip_resolution, vitb.feature_resolution, vitb.guidance_layers) == (384, 24, [3, 7])
    assert (vitb.text_guidance_in_dim, vitb.vision_width, vitb.decoder_guidance_dims) == (512, 768, [256, 128])
    vitl = FGASegConfig.from_preset("vitl_336_no_fast_add")
    assert (vitl.clip_resolution, vitl.guidance_layers, vitl.decoder_mode, vitl.fusion_mode) == (336, [7, 15], "no_fast", "add")
    assert vitl.text_guidance_in_dim == 768 and vitl.vision_width == 1024


def test_from_clip_pretrained_keeps_the_clip_weights(tmp_path):
    from transformers import CLIPModel

    from conftest import tiny_clip_config

    clip = CLIPModel(tiny_clip_config())
    clip.save_pretrained(tmp_path / "clip")
    model = FGASegModel.from_clip_pretrained(str(tmp_path / "clip"), preset=None, **{k: v for k, v in tiny_config().to_dict().items() if k in (
        "hidden_dim", "decoder_dims", "decoder_guidance_dims", "decoder_guidance_proj_dims", "text_guidance_proj_dim",
        "appearance_guidance_proj_dim", "window_size", "p2t_num_heads", "num_attention_heads", "image_size")})
    for name, value in clip.state_dict().items():
        assert torch.equal(model.clip.state_dict()[name], value), name


def test_gradient_checkpointing_gives_the_same_gradients():
    model = make_model()
    model.train()
    ids, x = make_input_ids(4), images(2)
    labels = torch.randint(0, 4, (2, 16, 16), generator=torch.Generator().manual_seed(0))
    model(x, ids, labels=labels).loss.backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    model.activation_checkpointing_enable()
    assert model.decoder.gradient_checkpointing and model.clip.vision_model.encoder.layers[0].gradient_checkpointing
    recomputed = []
    hooks = [module.register_forward_hook(lambda m, a, o, name=name: recomputed.append(name))
             for name, module in (("stage1", model.decoder.decoder1), ("stage2", model.decoder.decoder2))]
    model(x, ids, labels=labels).loss.backward()
    for hook in hooks:
        hook.remove()
    # The upsampling stages run again in the backward (checkpointed), as the aggregation layers do.
    assert recomputed.count("stage1") == 2 and recomputed.count("stage2") == 2
    for name, grad in plain.items():
        assert torch.allclose(model.get_parameter(name).grad, grad, atol=1e-6), name


def test_forward_traces_as_one_graph_for_torch_compile():
    """Dynamo sees the whole forward as one graph, without breaks: at inference with top-k pruning (whose kept class
    count is data-dependent, captured as a symbolic size) and in training."""
    model = make_model(inference_top_k=2)
    input_ids = make_input_ids(6, model.config.num_templates)
    with torch.no_grad():
        text_embeds = model.get_text_embeddings(input_ids)
        pruned = model(pixel_values=images(2), text_embeds=text_embeds)
    assert not pruned.kept_classes.all()  # the pruning really runs
    with torch._dynamo.config.patch(capture_scalar_outputs=True), torch.no_grad():
        explained = torch._dynamo.explain(model)(pixel_values=images(2), text_embeds=text_embeds)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
    model.train()
    labels = torch.randint(0, 6, (2, model.config.clip_resolution, model.config.clip_resolution))
    explained = torch._dynamo.explain(model)(pixel_values=images(2), input_ids=input_ids, labels=labels)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
    torch._dynamo.reset()


# ----------------------------------------------------------------------------- CPU fast paths and reduced precision
@pytest.mark.parametrize("shape", [(5, 8, 7, 9), (3, 16, 6, 6), (2, 4, 1, 5)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_score_head_without_gradients_equals_the_convolution(shape, channels_last):
    from fgaseg_hf.fgaseg_decoder import ScoreHead

    torch.manual_seed(0)
    head = ScoreHead(shape[1])
    x = torch.randn(shape)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    expected = F.conv2d(x, head.weight, head.bias, padding=1)
    with torch.no_grad():
        fast = head(x)
    assert fast.shape == expected.shape
    assert torch.allclose(fast, expected, atol=1e-5)
    # With gradients the module is the convolution itself, bit for bit.
    assert torch.equal(head(x).detach(), expected.detach())


def test_linear_attention_normalises_in_float32():
    """fp16 inputs whose normaliser overflows fp16 (> 65504): computed in float32 the result is the float32 one."""
    from fgaseg_hf.fgaseg_aggregation import linear_attention

    generator = torch.Generator().manual_seed(0)
    q, k, v = (8 + torch.rand(1, 2, 256, 32, generator=generator) for _ in range(3))
    weights, length = torch.ones(1, 1, 256, 1), torch.full((1, 1, 1, 1), 256.0)
    assert not torch.isfinite((F.elu(q) + 1).half() @ (F.elu(k) + 1).half().sum(dim=-2, keepdim=True).mT).all()
    expected = linear_attention(q, k, v, weights, length)
    half = linear_attention(q.half(), k.half(), v.half(), weights, length)
    assert half.dtype == torch.float16
    assert torch.allclose(half.float(), expected, rtol=2e-3)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_stays_finite_and_keeps_the_loss_in_float32(dtype):
    model = make_model()
    ids, x = make_input_ids(5), images(2)
    labels = torch.randint(0, 5, (2, SIZE, SIZE), generator=torch.Generator().manual_seed(3))
    labels[:, :4] = 255
    model.train()
    reference = model(x, ids, labels=labels)
    with torch.autocast("cpu", dtype=dtype):
        reduced = model(x, ids, labels=labels)
    assert reduced.loss.dtype == torch.float32 and torch.isfinite(reduced.loss)
    assert reduced.loss.item() == pytest.approx(reference.loss.item(), rel=0.05)
    reduced.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    with torch.no_grad():
        expected = model(x, ids).logits
        with torch.autocast("cpu", dtype=dtype):
            logits = model(x, ids).logits
    assert torch.isfinite(logits).all()
    assert (logits.float().sigmoid() - expected.sigmoid()).abs().max() < 0.1


# ----------------------------------------------------------------------------- memory: class chunks
def test_run_in_class_chunks_splits_the_class_axis_only_without_gradients():
    from fgaseg_hf.fgaseg_aggregation import run_in_class_chunks

    x, y = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    sizes = []

    def function(a, b):
        sizes.append(a.shape[1])
        return (a * b).cumsum(-1)

    with torch.no_grad():
        chunked = run_in_class_chunks(function, (x, y), chunk_size=4)  # 4 maps: 2 classes of 2 images
    assert sizes == [2, 2, 1] and torch.equal(chunked, (x * y).cumsum(-1))
    sizes.clear()
    with torch.no_grad():
        run_in_class_chunks(function, (x, y), chunk_size=0)
        run_in_class_chunks(function, (x, y), chunk_size=10)
    run_in_class_chunks(function, (x.requires_grad_(), y), chunk_size=4)
    assert sizes == [5, 5, 5]


@pytest.mark.parametrize("sliding", [False, True])
def test_class_chunks_give_the_unchunked_result(sliding):
    """Chunks of 8 (image, class) maps (2 classes of the 4 images) through the Swin blocks and the upsampling decoder, with top-k pruning
    pooled over the views of an image or per image."""
    model = make_model(inference_top_k=3)
    ids, x = make_input_ids(9), images(4)
    groups = torch.tensor([0, 0, 1, 1]) if sliding else None
    with torch.no_grad():
        whole = model(x, ids, pruning_groups=groups)
        calls = []
        hooks = [model.decoder.decoder2.register_forward_hook(lambda m, a, o: calls.append(a[0].shape[0])),
                 model.decoder.layers[0].swin_block.register_forward_hook(lambda m, a, o: swin.append(a[0].shape[:2]))]
        swin = []
        model.decoder.chunk_size = 8
        chunked = model(x, ids, pruning_groups=groups)
        for hook in hooks:
            hook.remove()
    assert len(calls) > 1 and max(calls) == 8
    assert len(swin) > 1 and all(shape == (4, 2) for shape in swin[:-1])
    assert torch.equal(whole.kept_classes, chunked.kept_classes)
    assert torch.allclose(whole.logits, chunked.logits, atol=1e-5)
