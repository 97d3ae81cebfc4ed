"""The web demo's functions, without a browser: the same outputs as `fgaseg segment`, the caches, presets, bad
input as one line, the page's layout and queue, and `fgaseg demo`'s own errors."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_model, tiny_processor, tiny_tokenizer
from PIL import Image

from fgaseg_hf.cli import main
from fgaseg_hf.data.benchmarks import class_names
from fgaseg_hf.demo import segmenter as demo_segmenter
from fgaseg_hf.demo.segmenter import (
    DEMO_MODEL_CHOICE,
    MODEL_VOCABULARY,
    VOCABULARY_PRESETS,
    DemoSegmenter,
    format_label_list,
)
from fgaseg_hf.prompt_templates import parse_label_list
from fgaseg_hf.segment import SegmentError
from fgaseg_hf.visualization import class_colours

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "synthetic_scene.png"
DEMO_CLASSES = "sky, water, grass, sand, road, building, tree"


@pytest.fixture(scope="module")
def fgaseg_folder(tmp_path_factory):
    """A tiny random FGA-Seg without a vocabulary of its own."""
    path = tmp_path_factory.mktemp("demo-fgaseg")
    model = make_model(seed=5)
    model.save_pretrained(path)
    tiny_processor(model.config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def ita_folder(tmp_path_factory):
    from test_modeling_ita import make_ita

    from fgaseg_hf import ITAProcessor

    path = tmp_path_factory.mktemp("demo-ita")
    model = make_ita(min_size_test=48, max_size_test=96)
    model.save_pretrained(path)
    ITAProcessor.from_model_config(model.config, tiny_tokenizer()).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("demo-photo") / "noise.png"
    Image.fromarray(np.random.default_rng(7).integers(0, 256, (37, 53, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def segmenter():
    value = DemoSegmenter()
    yield value
    value.close()


def cli_segment(capsys, tmp_path, image, labels, model=None, sliding=None):
    argv = ["segment", str(image), "--labels", labels, "--output", str(tmp_path), "--json"]
    if model is not None:
        argv += ["--model", str(model)]
    if sliding is not None:
        argv.append("--sliding-window" if sliding else "--no-sliding-window")
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


@pytest.mark.parametrize(
    "family, labels, sliding",
    [
        ("shipped", DEMO_CLASSES, None),  # the processor's own setting: the window
        ("shipped", "sky; tree; road, street", False),
        ("fgaseg", "sky, road, car, tree", True),
        ("ita", "car, tree, road, sky, grass", None),
    ],
)
def test_the_same_outputs_as_fgaseg_segment(family, labels, sliding, segmenter, fgaseg_folder, ita_folder, photo,
                                            tmp_path, capsys):
    model = {"shipped": None, "fgaseg": fgaseg_folder, "ita": ita_folder}[family]
    image = EXAMPLE if family == "shipped" else photo
    record = cli_segment(capsys, tmp_path, image, labels, model, sliding)
    result = segmenter.segment(str(image), labels, str(model) if model else DEMO_MODEL_CHOICE, sliding)

    cli_labels = np.asarray(Image.open(record["labels_png"]))
    assert np.array_equal(np.asarray(Image.open(result.labels_png)), cli_labels)
    assert np.array_equal(result.label_map, cli_labels)
    cli_overlay = Image.open(record["overlay_png"])
    assert np.array_equal(np.asarray(result.overlay), np.asarray(cli_overlay.convert("RGB")))
    assert result.legend == json.loads(cli_overlay.text["legend"])
    assert result.scores == record["scores"]
    assert result.names == parse_label_list(labels)
    assert len(np.unique(cli_labels)) >= 2  # a label map worth comparing


def test_shipped_model_finds_the_example_scene(segmenter):
    """The demo model on its example: the scene's own classes, the table largest first, coverage adding up."""
    result = segmenter.segment(str(EXAMPLE), DEMO_CLASSES)
    truth = np.asarray(Image.open(EXAMPLE.with_name("synthetic_scene_labels.png")))
    assert (result.label_map == truth).mean() > 0.8
    table = result.table()
    assert [row[0] for row in table] == [entry["name"] for entry in result.legend]
    coverages = [row[1] for row in table]
    assert coverages == sorted(coverages, reverse=True) and sum(coverages) == pytest.approx(100.0, abs=0.05)
    for name, percent, score in table:
        class_id = result.names.index(name)
        assert percent == pytest.approx(100 * (result.label_map == class_id).mean(), abs=0.005)
        assert score == pytest.approx(result.scores[name], abs=5e-5) and 0 < score <= 1
    masks = result.annotations()
    assert [name for _, name in masks] == [row[0] for row in table]
    assert np.array_equal(sum(mask for mask, _ in masks), np.ones(result.label_map.shape))
    for mask, name in masks:
        assert np.array_equal(mask > 0, result.label_map == result.names.index(name))
    palette = class_colours(len(result.names))
    for name, colour in result.colour_map().items():
        assert colour == "#{:02x}{:02x}{:02x}".format(*palette[result.names.index(name)])
    assert result.summary().startswith(f"{len(table)} of 7 classes present ({table[0][0]} ")


def test_text_embeddings_cached_per_model_and_vocabulary_and_each_model_loaded_once(fgaseg_folder, photo,
                                                                                   monkeypatch):
    loads = []
    original_load = demo_segmenter.load_pipeline
    monkeypatch.setattr(demo_segmenter, "load_pipeline", lambda *a: loads.append(a[0]) or original_load(*a))
    segmenter = DemoSegmenter()
    try:
        encoded = []
        for model in (None, str(fgaseg_folder)):
            pipe = segmenter.pipeline(model)
            original = pipe.model.encode_vocabulary
            monkeypatch.setattr(pipe.model, "encode_vocabulary",
                                lambda *a, _o=original, _m=model, **k: encoded.append((_m, tuple(a[1]))) or _o(*a, **k))
        same_folder = [str(fgaseg_folder), f"{fgaseg_folder}/", str(Path(fgaseg_folder) / ".." / fgaseg_folder.name)]
        for labels, model in [("sky, road", None), ("sky,road", DEMO_MODEL_CHOICE), ("road, sky", None),
                              ("sky, road", same_folder[0]), ("sky ,road ", same_folder[1]), ("sky, road", None),
                              ("sky, road", same_folder[2])]:
            segmenter.segment(str(photo), labels, model, False)
        assert encoded == [(None, ("sky", "road")), (None, ("road", "sky")), (str(fgaseg_folder), ("sky", "road"))]
        assert len(loads) == 2 and loads[1] == str(fgaseg_folder)
    finally:
        segmenter.close()


def test_presets_fill_the_box_with_the_shipped_class_lists(segmenter, fgaseg_folder):
    for preset, key in VOCABULARY_PRESETS.items():
        text = segmenter.vocabulary_text(preset)
        assert parse_label_list(text) == [name.strip() for name in class_names(key)]
    assert {len(parse_label_list(segmenter.vocabulary_text(p))) for p in VOCABULARY_PRESETS} == {150, 171, 59, 20}
    assert segmenter.vocabulary_text(MODEL_VOCABULARY) == DEMO_CLASSES
    with pytest.raises(SegmentError, match="^this model has no vocabulary of its own"):
        segmenter.vocabulary_text(MODEL_VOCABULARY, str(fgaseg_folder))
    synonyms = ["chest of drawers, chest", "door"]
    assert parse_label_list(format_label_list(synonyms)) == synonyms
    info = segmenter.model_info(None)
    assert (info.family, info.vocabulary, info.sliding_window_supported, info.sliding_window_default) == (
        "FGA-Seg", DEMO_CLASSES.split(", "), True, True)


def test_bad_input_is_one_line_for_the_page(segmenter, ita_folder, photo, tmp_path):
    (tmp_path / "empty-folder").mkdir()
    (tmp_path / "text.png").write_text("not a picture")
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "config.json").write_text(json.dumps({"model_type": "clip"}))
    cases = [
        ((None, "sky"), "no image: upload a photo"),
        ((str(photo), ""), "no class names: type some"),
        ((str(photo), " ,; "), "no class names: type some"),
        ((str(photo), "sky, tree, sky"), "class names: duplicate class names: ['sky']"),
        ((str(photo), "sky", str(tmp_path / "empty-folder")), f"model {tmp_path / 'empty-folder'}: not a model folder"),
        ((str(photo), "sky", str(tmp_path / "text.png")), f"model {tmp_path / 'text.png'}: not a folder"),
        ((str(photo), "sky", str(tmp_path / "clip")), "model_type 'clip'"),
        ((str(photo), "sky", "no-such-folder"), "model no-such-folder: no such folder"),
        ((str(photo), "sky", "someone/not-on-this-machine"), "cannot load the model someone/not-on-this-machine"),
        ((str(tmp_path / "text.png"), "sky"), "text.png: not an image file"),
        ((str(photo), "sky, car", str(ita_folder), True), "sliding window: ITA models have no sliding-window"),
    ]
    for args, message in cases:
        with pytest.raises(SegmentError) as caught:
            segmenter.segment(*args)
        text = str(caught.value)
        assert message in text and "\n" not in text and "Traceback" not in text, text
        assert not text.startswith("--")  # the page has no command-line options


def test_label_pngs_kept_bounded_and_removed_on_close(monkeypatch, tmp_path):
    monkeypatch.setattr(demo_segmenter, "_KEPT_RESULTS", 2)
    own = DemoSegmenter()
    files = []
    for n in range(5):
        files.append(own._new_file(f"{n}.png"))
        files[-1].write_bytes(b"x")
    assert [p.exists() for p in files] == [False, False, False, True, True]
    own.close()
    assert not own.work_dir.exists()
    keep = tmp_path / "theirs.txt"
    keep.write_text("not ours")
    given = DemoSegmenter(work_dir=str(tmp_path))
    given._new_file("a.png").write_bytes(b"x")
    given.close()
    assert keep.read_text() == "not ours" and sorted(p.name for p in tmp_path.iterdir()) == ["theirs.txt"]


# ----------------------------------------------------------------- the page (Gradio, no browser)
def test_page_layout_queue_and_no_telemetry(segmenter):
    gr = pytest.importorskip("gradio", reason="the [demo] extra (Gradio) is not installed")
    from fgaseg_hf.demo.ui import build_app

    demo = build_app(segmenter, queue_size=5)
    assert demo._queue.max_size == 5 and demo.analytics_enabled is False
    blocks = {block.elem_id: block for block in demo.blocks.values() if getattr(block, "elem_id", None)}
    assert {"input-image", "labels", "preset", "model", "sliding-window", "segment-button", "overlay", "classes",
            "label-png", "annotated", "status"} <= set(blocks)
    assert isinstance(blocks["annotated"], gr.AnnotatedImage)
    assert set(blocks["input-image"].sources) == {"upload", "webcam", "clipboard"}
    assert blocks["labels"].value == DEMO_CLASSES and blocks["model"].value == DEMO_MODEL_CHOICE
    assert [choice[0] for choice in blocks["preset"].choices] == [MODEL_VOCABULARY, *VOCABULARY_PRESETS]
    assert blocks["sliding-window"].value is True
    segment_events = [fn for fn in demo.fns.values() if fn.api_name == "segment"]
    assert len(segment_events) == 1 and segment_events[0].concurrency_limit == 1
    # Every event that touches a model shares one worker.
    model_events = [fn for fn in demo.fns.values() if fn.name in ("segment", "choose_model", "choose_preset")]
    assert len(model_events) == 4 and {(fn.concurrency_id, fn.concurrency_limit) for fn in model_events} == {("model", 1)}
    (examples,) = [block for block in demo.blocks.values() if isinstance(block, gr.Dataset)]
    assert len(examples.samples) == 1 and "synthetic_scene.png" in str(examples.samples[0])  # the committed one


def test_queue_makes_users_wait_one_at_a_time_and_refuses_beyond_its_size(photo):
    """One request runs; `queue_size` more wait; the next is refused with Gradio's "queue is full"."""
    pytest.importorskip("gradio", reason="the [demo] extra (Gradio) is not installed")
    from gradio_client import Client, handle_file

    from fgaseg_hf.demo.ui import build_app, launch

    release, running, spans = threading.Event(), threading.Event(), []

    class Gated(DemoSegmenter):
        def segment(self, *args, **kwargs):
            start = time.monotonic()
            running.set()
            release.wait(60)
            result = super().segment(*args, **kwargs)
            spans.append((start, time.monotonic()))
            return result

    gated = Gated()
    demo = build_app(gated, queue_size=2)
    url = launch(demo, port=None, block=False, quiet=True)
    try:
        assert url.startswith("http://127.0.0.1:")
        client = Client(url, verbose=False)
        jobs = [client.submit(handle_file(str(photo)), "sky, road", DEMO_MODEL_CHOICE, False, api_name="/segment")]
        assert running.wait(60)
        jobs += [client.submit(handle_file(str(photo)), "sky, road", DEMO_MODEL_CHOICE, False, api_name="/segment")
                 for _ in range(2)]
        deadline = time.monotonic() + 30
        while len(demo._queue) < 2 and time.monotonic() < deadline:  # the two are waiting
            time.sleep(0.05)
        assert len(demo._queue) == 2
        refused = client.submit(handle_file(str(photo)), "sky, road", DEMO_MODEL_CHOICE, False, api_name="/segment")
        with pytest.raises(Exception, match="(?i)queue is full"):
            refused.result(timeout=60)
        release.set()
        tables = [job.result(timeout=120)[1]["data"] for job in jobs]
        assert tables[0] == tables[1] == tables[2] and tables[0]
        spans.sort()
        assert len(spans) == 3 and all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))  # one at a time
    finally:
        release.set()
        demo.close()
        gated.close()


# ----------------------------------------------------------------- `fgaseg demo`
def test_demo_command_without_gradio_says_how_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` raises ImportError
    assert main(["demo", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err == "error: the web demo needs Gradio: pip install 'fgaseg_hf[demo]' (in a checkout: pip install -e '.[demo]')\n"


def test_demo_command_refuses_a_bad_model_or_port_in_one_line(tmp_path, capsys):
    pytest.importorskip("gradio", reason="the [demo] extra (Gradio) is not installed")
    assert main(["demo", "--model", str(tmp_path), "--port", "0"]) == 2
    assert capsys.readouterr().err == f"error: model {tmp_path}: not a model folder (no config.json)\n"
    assert main(["demo", "--port", "70000"]) == 2
    assert capsys.readouterr().err == "error: --port must lie in [0, 65535], got 70000\n"
    assert main(["demo", "--queue-size", "0", "--port", "0"]) == 2
    assert capsys.readouterr().err == "error: the queue size must be positive, got 0\n"


def test_page_events_model_choice_presets_and_errors(segmenter, fgaseg_folder, ita_folder, photo):
    """The page's event functions as Gradio calls them: the model box updates the sliding-window toggle, presets
    fill the class names, bad input is a `gradio.Error` carrying the one line."""
    gr = pytest.importorskip("gradio", reason="the [demo] extra (Gradio) is not installed")
    from fgaseg_hf.demo.ui import build_app

    demo = build_app(segmenter)
    events = {fn.name: fn.fn for fn in demo.fns.values()}
    toggle, status = events["choose_model"](str(ita_folder))
    assert (toggle["value"], toggle["interactive"]) == (False, False)
    assert status.startswith(f"model: ITA from `{ita_folder}`")
    toggle, status = events["choose_model"](DEMO_MODEL_CHOICE)
    assert (toggle["value"], toggle["interactive"]) == (True, True) and status.endswith("own vocabulary of 7 classes")
    assert events["choose_preset"]("VOC-20", DEMO_MODEL_CHOICE) == ", ".join(class_names("voc20"))
    with pytest.raises(gr.Error, match="this model has no vocabulary of its own"):
        events["choose_preset"](MODEL_VOCABULARY, str(fgaseg_folder))
    with pytest.raises(gr.Error) as caught:
        events["segment"](str(photo), "sky; sky", DEMO_MODEL_CHOICE, False)
    assert caught.value.message == "class names: duplicate class names: ['sky']"
    with pytest.raises(gr.Error, match="not a model folder"):
        events["choose_model"](str(photo.parent))
    overlay, table, label_png, annotated, summary = events["segment"](str(EXAMPLE), DEMO_CLASSES, DEMO_MODEL_CHOICE, True)
    expected = segmenter.segment(str(EXAMPLE), DEMO_CLASSES, None, True)
    assert np.array_equal(np.asarray(overlay), np.asarray(expected.overlay)) and table == expected.table()
    assert np.array_equal(np.asarray(Image.open(label_png)), expected.label_map)
    assert annotated["color_map"] == expected.colour_map()
    base, masks = annotated["value"]
    assert [name for _, name in masks] == [row[0] for row in table]
    assert all(set(np.unique(mask)) == {0.0, np.float32(0.6)} for mask, _ in masks)
    assert summary.startswith(f"{len(table)} of 7 classes present")


def test_app_py_is_the_same_app_for_a_space(fgaseg_folder, monkeypatch):
    pytest.importorskip("gradio", reason="the [demo] extra (Gradio) is not installed")
    import runpy

    monkeypatch.setenv("FGASEG_DEMO_MODEL", str(fgaseg_folder))
    demo = runpy.run_path(str(EXAMPLE.parents[1] / "app.py"), run_name="space")["demo"]
    try:
        blocks = {block.elem_id: block for block in demo.blocks.values() if getattr(block, "elem_id", None)}
        assert blocks["model"].value == str(fgaseg_folder) and blocks["labels"].value == ""  # no own vocabulary
        assert [fn.api_name for fn in demo.fns.values() if fn.api_name == "segment"] == ["segment"]
        assert demo._queue.max_size == 16
    finally:
        demo.segmenter.close()
