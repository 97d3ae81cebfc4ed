"""Build OpenAI CLIP's tokenizer offline from its BPE merge list (shipped in `assets/`, MIT licensed)."""

from __future__ import annotations

import gzip
import os

from transformers import CLIPTokenizer

BPE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "bpe_simple_vocab_16e6.txt.gz")
NUM_MERGES = 49152 - 256 - 2


def _bytes_to_unicode() -> list[str]:
    """GPT-2's byte -> printable unicode table, in vocabulary order: printable bytes first, then the rest."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(others))]


def clip_vocabulary(bpe_path: str = BPE_PATH) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The CLIP vocabulary `{token: id}` (49408 tokens) and merge list (pairs) from the BPE file."""
    with gzip.open(bpe_path, "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]
    base = _bytes_to_unicode()
    tokens = base + [b + "</w>" for b in base] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}, merges


def build_clip_tokenizer(model_max_length: int = 77) -> CLIPTokenizer:
    """The real CLIP tokenizer (same ids as `openai/clip-vit-*`), built without the Hub."""
    vocab, merges = clip_vocabulary()
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789-'&."


def build_character_tokenizer(model_max_length: int = 64) -> CLIPTokenizer:
    """A CLIP tokenizer whose vocabulary is single characters (each also as a word end), for small text towers
    trained from scratch: any text tokenises, at one token per character. Ids: characters, characters + "</w>",
    an unknown-character token (CLIP's own tokenizer uses end-of-text for it, which would end the prompt early for
    the text tower), then start and end of text."""
    vocab = list(CHARACTERS) + [c + "</w>" for c in CHARACTERS] + ["<|unknown|>", "<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(
        vocab={t: i for i, t in enumerate(vocab)}, merges=[], model_max_length=model_max_length, unk_token="<|unknown|>"
    )
