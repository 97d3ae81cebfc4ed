"""Thread safety of the shared mutable state: the pipelines' text-embedding caches and ITA's text cache. Threads
sharing one pipeline with more vocabularies than the cache holds get exactly the single-threaded results, and
the cache never holds a wrong entry."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from conftest import make_model, tiny_processor, tiny_tokenizer
from PIL import Image
from test_modeling_ita import make_ita
from transformers import pipeline

from fgaseg_hf import ITAProcessor
from fgaseg_hf.pipeline_fgaseg import _TEXT_CACHE_SIZE

WORDS = ["sky", "road", "car", "tree", "grass", "water", "sand", "house", "boat", "bird", "wall", "door"]
# More vocabularies than the cache holds, so that threads evict each other's entries.
VOCABULARIES = [[WORDS[(i + j) % len(WORDS)] for j in range(2 + i % 3)] for i in range(_TEXT_CACHE_SIZE + 2)]
IMAGE = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 52, 3), dtype=np.uint8))
THREADS = 4


@pytest.fixture(scope="module")
def fgaseg_folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-fgaseg")
    model = make_model()
    model.save_pretrained(path)
    tiny_processor(model.config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def ita_folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-ita")
    model = make_ita(min_size_test=48, max_size_test=96)
    model.save_pretrained(path)
    ITAProcessor.from_model_config(model.config, tiny_tokenizer()).save_pretrained(path)
    return path


def _summary(result) -> list:
    return [(r["label"], r["score"], np.asarray(r["mask"]).tobytes()) for r in result]


def _run_threads(work, count=THREADS):
    errors, barrier = [], threading.Barrier(count)

    def target(index):
        try:
            barrier.wait()
            work(index)
        except BaseException as error:  # reported in the main thread
            errors.append(error)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


@pytest.mark.parametrize("family", ["fgaseg", "ita"])
def test_threads_sharing_a_pipeline_get_the_single_threaded_results(family, fgaseg_folder, ita_folder):
    folder = fgaseg_folder if family == "fgaseg" else ita_folder
    reference_pipe = pipeline("open-vocabulary-segmentation", model=str(folder), trust_remote_code=True)
    expected = [_summary(reference_pipe(IMAGE, candidate_labels=vocabulary)) for vocabulary in VOCABULARIES]
    shared = pipeline("open-vocabulary-segmentation", model=str(folder), trust_remote_code=True)
    got: dict = {}

    def work(index):
        # Each thread walks half of the vocabularies from its own start: threads share some, together they use
        # more than the cache holds, so that hits, misses and evictions interleave across threads.
        for step in range(len(VOCABULARIES) // 2):
            v = (2 * index + step) % len(VOCABULARIES)
            got[(index, v)] = _summary(shared(IMAGE, candidate_labels=VOCABULARIES[v]))

    _run_threads(work)
    assert len(got) == THREADS * (len(VOCABULARIES) // 2) and {v for _, v in got} == set(range(len(VOCABULARIES)))
    for (index, v), run in got.items():
        assert run == expected[v], (family, index, VOCABULARIES[v])
    cache = shared._text_cache
    assert 0 < len(cache) <= _TEXT_CACHE_SIZE
    # Every cached entry is the encoding of its own vocabulary.
    for (names, templates), encoded in cache.items():
        fresh = shared.model.encode_vocabulary(shared.tokenizer, list(names), templates=templates)
        assert encoded.keys() == fresh.keys()
        for key, value in encoded.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, fresh[key]), (names, key)


def test_the_text_cache_survives_a_stampede(fgaseg_folder):
    # Many threads hitting the cache at once (lookups, inserts and evictions in the same instant).
    shared = pipeline("open-vocabulary-segmentation", model=str(fgaseg_folder), trust_remote_code=True)
    keys = [shared._vocabulary(names, None) for names in VOCABULARIES]
    expected = {key: shared.model.encode_vocabulary(shared.tokenizer, list(key[0]))["text_embeds"] for key in keys}

    def work(index):
        for round_ in range(6):
            for key in keys[index % 3:] + keys[: index % 3]:
                assert torch.equal(shared._encoded_vocabulary(key)["text_embeds"], expected[key])

    _run_threads(work, count=8)
    assert len(shared._text_cache) <= _TEXT_CACHE_SIZE


def test_ita_text_cache_is_shared_safely_by_threads():
    model = make_ita()
    tokenizer = tiny_tokenizer()
    prompts = [tokenizer([f"a {w}" for w in VOCABULARIES[v]], padding="max_length", max_length=16, return_tensors="pt")
               for v in range(len(VOCABULARIES))]
    with torch.no_grad():
        expected = [model.clip.text_model(input_ids=p["input_ids"], attention_mask=p["attention_mask"]).text_embeds
                    for p in prompts]
    model.config.trim_text_padding = False  # the cached path then runs exactly the reference computation
    model.clip._text_cache.clear()

    def work(index):
        for _ in range(3):
            for v in list(range(index, len(prompts))) + list(range(index)):
                embeds = model.clip.text_embeddings(prompts[v]["input_ids"], prompts[v]["attention_mask"])
                assert torch.equal(embeds, expected[v]), v

    _run_threads(work)
    assert 0 < len(model.clip._text_cache) <= 8
