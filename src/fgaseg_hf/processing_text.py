"""Class names -> prompts -> token ids in the layout `FGASegModel` expects (class-major)."""

from __future__ import annotations


def class_prompt_name(name: str) -> str:
    """The part of a class name the prompts use: the first synonym of "a, b, c" (as the original does)."""
    return name.split(", ")[0] if ", " in name else name


def build_prompts(class_names: list[str], templates: list[str]) -> list[str]:
    """Prompt `c * len(templates) + t` is class `c` in template `t`."""
    return [template.format(class_prompt_name(name)) for name in class_names for template in templates]


def check_class_names(class_names) -> list[str]:
    """Clean a vocabulary: a list of non-empty, distinct names; raise `ValueError`/`TypeError` naming the problem."""
    if isinstance(class_names, str):
        raise TypeError("class names must be a list of strings, not one string (split it first)")
    names = [str(n).strip() for n in class_names]
    if not names:
        raise ValueError("the list of class names is empty")
    if any(not n for n in names):
        raise ValueError("class names must not be empty strings")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate class names: {duplicates}")
    return names


def tokenize_vocabulary(tokenizer, class_names: list[str], templates: list[str]):
    """Tokenise every (class, template) prompt, padded to the longest; returns `input_ids` and `attention_mask`."""
    prompts = build_prompts(check_class_names(class_names), templates)
    return tokenizer(prompts, padding=True, truncation=True, return_tensors="pt")
