"""Prompt templates: FGA-Seg's single scene template and the ImageNet ensembles of the CLIP paper."""

from __future__ import annotations

SINGLE_TEMPLATES = ["A photo of a {} in the scene"]

# The 80 ImageNet templates of CLIP's prompt-engineering notebook.
IMAGENET_TEMPLATES = [
    'a bad photo of a {}.',
    'a photo of many {}.',
    'a sculpture of a {}.',
    'a photo of the hard to see {}.',
    'a low resolution photo of the {}.',
    'a rendering of a {}.',
    'graffiti of a {}.',
    'a bad photo of the {}.',
    'a cropped photo of the {}.',
    'a tattoo of a {}.',
    'the embroidered {}.',
    'a photo of a hard to see {}.',
    'a bright photo of a {}.',
    'a photo of a clean {}.',
    'a photo of a dirty {}.',
    'a dark photo of the {}.',
    'a drawing of a {}.',
    'a photo of my {}.',
    'the plastic {}.',
    'a photo of the cool {}.',
    'a close-up photo of a {}.',
    'a black and white photo of the {}.',
    'a painting of the {}.',
    'a painting of a {}.',
    'a pixelated photo of the {}.',
    'a sculpture of the {}.',
    'a bright photo of the {}.',
    'a cropped photo of a {}.',
    'a plastic {}.',
    'a photo of the dirty {}.',
    'a jpeg corrupted photo of a {}.',
    'a blurry photo of the {}.',
    'a photo of the {}.',
    'a good photo of the {}.',
    'a rendering of the {}.',
    'a {} in a video game.',
    'a photo of one {}.',
    'a doodle of a {}.',
    'a close-up photo of the {}.',
    'a photo of a {}.',
    'the origami {}.',
    'the {} in a video game.',
    'a sketch of a {}.',
    'a doodle of the {}.',
    'a origami {}.',
    'a low resolution photo of a {}.',
    'the toy {}.',
    'a rendition of the {}.',
    'a photo of the clean {}.',
    'a photo of a large {}.',
    'a rendition of a {}.',
    'a photo of a nice {}.',
    'a photo of a weird {}.',
    'a blurry photo of a {}.',
    'a cartoon {}.',
    'art of a {}.',
    'a sketch of the {}.',
    'a embroidered {}.',
    'a pixelated photo of a {}.',
    'itap of the {}.',
    'a jpeg corrupted photo of the {}.',
    'a good photo of a {}.',
    'a plushie {}.',
    'a photo of the nice {}.',
    'a photo of the small {}.',
    'a photo of the weird {}.',
    'the cartoon {}.',
    'art of the {}.',
    'a drawing of the {}.',
    'a photo of the large {}.',
    'a black and white photo of a {}.',
    'the plushie {}.',
    'a dark photo of a {}.',
    'itap of a {}.',
    'graffiti of the {}.',
    'a toy {}.',
    'itap of my {}.',
    'a photo of a cool {}.',
    'a photo of a small {}.',
    'a tattoo of the {}.',
]

# The "imagenet_select" subset used by CAT-Seg / FGA-Seg: seven ImageNet templates plus the scene template.
IMAGENET_SELECT_TEMPLATES = [
    'itap of a {}.',
    'a bad photo of the {}.',
    'a origami {}.',
    'a photo of the large {}.',
    'a {} in a video game.',
    'art of the {}.',
    'a photo of the small {}.',
    'A photo of a {} in the scene',
]

TEMPLATE_SETS = {"single": SINGLE_TEMPLATES, "imagenet": IMAGENET_TEMPLATES, "imagenet_select": IMAGENET_SELECT_TEMPLATES}


def resolve_templates(templates) -> list[str]:
    """A template-set name ("single", "imagenet", "imagenet_select") or a list of templates -> list of templates."""
    if isinstance(templates, str):
        if templates in TEMPLATE_SETS:
            return list(TEMPLATE_SETS[templates])
        if "{}" in templates:
            return [templates]
        raise ValueError(f"unknown prompt template set {templates!r}; use one of {sorted(TEMPLATE_SETS)} or a list of templates")
    templates = [str(t) for t in templates]
    if not templates or any("{}" not in t for t in templates):
        raise ValueError("prompt templates must be a non-empty list of strings that each contain '{}'")
    return templates


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
    if not isinstance(class_names, (list, tuple)):
        raise TypeError(f"class names must be a list of strings, got {type(class_names).__name__}")
    if any(not isinstance(n, str) for n in class_names):
        raise TypeError("class names must be strings")
    names = [n.strip() for n in class_names]
    if not names:
        raise ValueError("the list of class names is empty")
    if any(not n for n in names):
        raise ValueError("class names must not be empty strings")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate class names: {duplicates}")
    return names


def parse_label_list(text: str) -> list[str]:
    """ "sky, tree, car" -> ["sky", "tree", "car"]. Names that hold commas (synonyms) are separated by semicolons
    instead: "chest of drawers, chest; door" -> ["chest of drawers, chest", "door"]."""
    if not isinstance(text, str):
        raise TypeError(f"labels must be a string, got {type(text).__name__}")
    separator = ";" if ";" in text else ","
    # Stray commas around a name ("a, ; b") are separators too, not part of a name.
    names = [part.strip(" \t\n,;") for part in text.split(separator)]
    names = [name for name in names if name]
    if not names:
        raise ValueError(f"no labels in {text!r}: the label list is empty or holds only separators")
    return check_class_names(names)
