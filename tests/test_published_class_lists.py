"""FC-CLIP's published synonym lists (`data/benchmark_classes/fcclip/*.json`): one list per class of each benchmark,
in this package's label order, which a shifted or missing line would break."""

from __future__ import annotations

import re

import pytest

from fgaseg_hf.configuration_ita import split_synonyms
from fgaseg_hf.data.benchmarks import BENCHMARKS, published_class_synonyms, scored_class_names

KEYS = ("ade150", "ade847", "pc59", "pc459", "voc20", "voc20b", "coco")
# The classes whose first published synonym is not the plain name (index: (plain, first published synonym)); every
# other class must match after normalisation.
RENAMED = {
    "ade150": {25: ("house", "house exterior"), 40: ("base", "pedestal"), 63: ("blind", "window screen"),
               72: ("palm", "palm tree"), 82: ("light", "light bulb"), 125: ("pot", "plant pots"),
               130: ("screen", "projection screen"), 133: ("hood", "exhaust hood"), 139: ("fan", "ceiling fan"),
               147: ("glass", "cup")},
    "ade847": {26: ("house", "house exterior"), 49: ("base", "pedestal"), 63: ("palm", "palm tree"),
               147: ("screen", "crt screen"), 153: ("screen", "projection screen"), 162: ("hood", "exhaust hood"),
               175: ("fan", "ceiling fan")},
    "pc59": {18: ("computer", "computer case"), 32: ("light", "lamp"), 40: ("road", "street"),
             58: ("wood", "wood piece")},
    "pc459": {61: ("case", "computer case"), 231: ("light", "lamp"), 457: ("wood", "wood piece")},
    "coco": {84: ("building-other", "building")},
}


def normalised(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


@pytest.mark.parametrize("key", KEYS)
def test_one_synonym_list_per_scored_class_in_label_order(key):
    published = published_class_synonyms(key)
    plain = scored_class_names(key)  # VOC-20b: the 20 VOC names, then "background"
    assert len(published) == BENCHMARKS[key].num_classes == len(plain)
    renamed = RENAMED.get(key, {})
    for index, (synonyms, name) in enumerate(zip(published, plain)):
        first_plain = name.split(", ")[0]
        if index in renamed:
            assert (first_plain, synonyms[0]) == renamed[index]
        else:
            assert normalised(synonyms[0]) == normalised(first_plain), (key, index, name, synonyms)


@pytest.mark.parametrize("key", KEYS)
def test_synonyms_survive_itas_comma_split(key):
    """The evaluation joins a class's synonyms with "," and ITA splits them again: the same list must come back."""
    for synonyms in published_class_synonyms(key):
        assert synonyms and all(s and s == s.strip() for s in synonyms)
        assert split_synonyms(",".join(synonyms)) == synonyms


def test_known_entries_of_the_published_lists():
    assert published_class_synonyms("ade150")[0] == ["wall", "walls", "brick wall", "stone wall", "interior wall"]
    assert published_class_synonyms("pc59")[0] == ["aeroplane", "aeroplanes", "airplanes", "airplane"]
    voc20b = published_class_synonyms("voc20b")
    assert voc20b[:20] == published_class_synonyms("voc20")
    assert voc20b[20][:3] == ["background", "crops", "bush"] and len(voc20b[20]) == 74
    assert published_class_synonyms("coco")[0][:3] == ["person", "child", "girl"]
    with pytest.raises(ValueError, match="unknown benchmark"):
        published_class_synonyms("cityscapes")
    with pytest.raises(ValueError, match="no published class lists of 'ita'"):
        published_class_synonyms("ade150", family="ita")
