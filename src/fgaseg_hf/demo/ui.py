"""The Gradio page of the web demo (`fgaseg demo`, and `app.py` for a Space): `build_app` lays it out over a
`DemoSegmenter`, `launch` serves it on one host and port.

Gradio is imported only here, when the page is built, and never reaches the internet: analytics are off, no share
link is made, the page's fonts and scripts come from the installed package.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..segment import SegmentError
from .segmenter import DEMO_MODEL_CHOICE, MODEL_VOCABULARY, VOCABULARY_PRESETS, DemoSegmenter

INSTALL_HINT = "the web demo needs Gradio: pip install 'fgaseg_hf[demo]' (in a checkout: pip install -e '.[demo]')"
TABLE_HEADERS = ["class", "coverage %", "score"]
DEFAULT_QUEUE_SIZE = 16
_PICTURE_HEIGHT = 340
_LOG = logging.getLogger(__name__)

_INTRO = """# FGA-Seg open-vocabulary segmentation
Upload a photo (or use the webcam, or an example), type the classes to look for, press **Segment**. Separate the
names with commas, or with semicolons when a name holds commas (`chest of drawers, chest; door`). The shipped demo
model is tiny and knows seven outdoor classes (sky, water, grass, sand, road, building, tree); give a model folder
or a Hub id for real photographs."""


# Gradio's annotated image names a class when its legend entry is hovered; this names the class under the cursor on
# the picture itself. The masks are stacked same-origin images in legend order, so the topmost one with a visible
# pixel at the cursor is the class there (read through a canvas). `data-hovered` on the view holds the name too.
HOVER_JS = """
() => {
  const tip = document.createElement("div");
  tip.id = "fgaseg-hover-label";
  tip.style.cssText = "position:fixed;pointer-events:none;display:none;z-index:10000;padding:2px 8px;" +
    "border-radius:4px;background:rgba(0,0,0,0.78);color:#fff;font:14px sans-serif;white-space:nowrap";
  document.body.appendChild(tip);
  const pixels = new Map();
  function alpha(img, fx, fy) {
    if (!img.complete || !img.naturalWidth) return 0;
    let entry = pixels.get(img.src);
    if (!entry) {
      const canvas = document.createElement("canvas");
      canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
      const context = canvas.getContext("2d", {willReadFrequently: true});
      context.drawImage(img, 0, 0);
      entry = context.getImageData(0, 0, canvas.width, canvas.height);
      if (pixels.size > 64) pixels.clear();
      pixels.set(img.src, entry);
    }
    const x = Math.min(entry.width - 1, Math.floor(fx * entry.width));
    const y = Math.min(entry.height - 1, Math.floor(fy * entry.height));
    return entry.data[4 * (y * entry.width + x) + 3];
  }
  function hide(view) { tip.style.display = "none"; if (view) delete view.dataset.hovered; }
  document.addEventListener("mousemove", (event) => {
    const view = document.getElementById("annotated");
    const base = view && view.querySelector("img.base-image");
    if (!base || !base.naturalWidth) return hide(view);
    const box = base.getBoundingClientRect();
    // The drawn picture inside the element's box (object-fit: contain, or the box itself).
    const scale = Math.min(box.width / base.naturalWidth, box.height / base.naturalHeight);
    const width = base.naturalWidth * scale, height = base.naturalHeight * scale;
    const left = box.left + (box.width - width) / 2, top = box.top + (box.height - height) / 2;
    const fx = (event.clientX - left) / width, fy = (event.clientY - top) / height;
    if (fx < 0 || fy < 0 || fx >= 1 || fy >= 1) return hide(view);
    const masks = [...view.querySelectorAll("img.mask")];
    const names = [...view.querySelectorAll(".legend-item")].map((item) => item.textContent.trim());
    let name = null;
    for (let i = masks.length - 1; i >= 0 && name === null; i--) {
      if (alpha(masks[i], fx, fy) > 0) name = names[i] ?? null;
    }
    if (name === null) return hide(view);
    view.dataset.hovered = name;
    tip.textContent = name;
    tip.style.left = (event.clientX + 14) + "px";
    tip.style.top = (event.clientY + 14) + "px";
    tip.style.display = "block";
  });
}
"""
# How opaque the hover view's masks are, so that the photo shows through.
_MASK_OPACITY = 0.6


class DemoUnavailable(ImportError):
    """Gradio is not installed."""


def import_gradio():
    """Gradio with its telemetry off (set before the import: Gradio reads it when it loads)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        import gradio
    except ImportError:
        raise DemoUnavailable(INSTALL_HINT) from None
    return gradio


def example_images() -> list[str]:
    """The committed example photos (`examples/*.png` of a checkout or a Space, without the `*_labels.png`
    answers); none in an installed wheel."""
    for root in (Path(__file__).resolve().parents[3], Path.cwd()):
        folder = root / "examples"
        if folder.is_dir():
            found = sorted(str(p) for p in folder.glob("*.png") if not p.stem.endswith("_labels"))
            if found:
                return found
    return []


def build_app(segmenter: DemoSegmenter | None = None, model: str | None = None, queue_size: int = DEFAULT_QUEUE_SIZE,
              examples: list[str] | None = None):
    """The demo as a `gradio.Blocks`. `model`: the initial model choice (default: the shipped demo model), loaded
    now, so that a bad one is reported before the page is served. `queue_size`: requests that may wait; one runs at
    a time (a further user sees the queue full and is asked to retry instead of the process running out of
    memory)."""
    gr = import_gradio()
    if queue_size < 1:
        raise SegmentError(f"the queue size must be positive, got {queue_size}")
    segmenter = segmenter or DemoSegmenter()
    choice = model or DEMO_MODEL_CHOICE
    info = segmenter.model_info(choice)
    examples = example_images() if examples is None else examples
    initial_labels = segmenter.vocabulary_text(MODEL_VOCABULARY, choice) if info.vocabulary else ""

    def page_error(error: Exception):
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        if isinstance(error, (SegmentError, ValueError, TypeError, OSError)):
            # Bad input: the message is the whole story, no traceback in the server's log either.
            return gr.Error(first_line or type(error).__name__, print_exception=False)
        # Unexpected: the whole story goes to the server's log, one line to the page.
        _LOG.exception("demo request failed")
        return gr.Error(f"internal error ({type(error).__name__}): {first_line or 'see the server log'}",
                        print_exception=False)

    def segment(image, labels, model_choice, sliding_window, progress=gr.Progress()):
        try:
            result = segmenter.segment(image, labels, model_choice, bool(sliding_window),
                                       progress=lambda fraction, text: progress(fraction, desc=text))
        except Exception as error:  # noqa: BLE001 - every failure becomes a message in the page
            raise page_error(error) from None
        return (
            result.overlay,
            result.table(),
            str(result.labels_png),
            gr.update(value=(result.image.convert("RGB"), [(m * _MASK_OPACITY, n) for m, n in result.annotations()]),
                      color_map=result.colour_map()),
            result.summary(),
        )

    def choose_model(model_choice, progress=gr.Progress()):
        progress(0.2, desc="loading the model")
        try:
            chosen = segmenter.model_info(model_choice)
        except Exception as error:  # noqa: BLE001
            raise page_error(error) from None
        own = f"its own vocabulary of {len(chosen.vocabulary)} classes" if chosen.vocabulary else "no own vocabulary"
        return (
            gr.update(value=chosen.sliding_window_default and chosen.sliding_window_supported,
                      interactive=chosen.sliding_window_supported),
            f"model: {chosen.family} from `{chosen.location}`, {own}",
        )

    def choose_preset(preset, model_choice):
        if not preset:
            return gr.update()
        try:
            return segmenter.vocabulary_text(preset, model_choice)
        except Exception as error:  # noqa: BLE001
            raise page_error(error) from None

    with gr.Blocks(title="FGA-Seg open-vocabulary segmentation", analytics_enabled=False,
                   delete_cache=(900, 3600)) as demo:
        gr.Markdown(_INTRO)
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(label="Image", sources=["upload", "webcam", "clipboard"], type="filepath",
                                 image_mode=None, format="png", height=_PICTURE_HEIGHT, elem_id="input-image")
                labels = gr.Textbox(label="Class names", value=initial_labels, lines=2, elem_id="labels",
                                    placeholder="sky, tree, car   (use ; when a name holds commas)")
                preset = gr.Dropdown(label="Vocabulary preset (fills the class names)",
                                     choices=[MODEL_VOCABULARY, *VOCABULARY_PRESETS], value=None, elem_id="preset")
                model_box = gr.Dropdown(label="Model: the shipped demo model, a model folder or a Hub id",
                                        choices=[DEMO_MODEL_CHOICE] + ([model] if model else []), value=choice,
                                        allow_custom_value=True, elem_id="model")
                sliding = gr.Checkbox(label="Sliding-window inference (the original's; FGA-Seg family)",
                                      value=info.sliding_window_default and info.sliding_window_supported,
                                      interactive=info.sliding_window_supported, elem_id="sliding-window")
                button = gr.Button("Segment", variant="primary", elem_id="segment-button")
                status = gr.Markdown(f"model: {info.family} from `{info.location}`", elem_id="status")
                if examples:
                    gr.Examples(examples=[[path] for path in examples], inputs=[image], label="Examples")
            with gr.Column(scale=1):
                overlay = gr.Image(label="Overlay with legend", type="pil", format="png", interactive=False,
                                   height=_PICTURE_HEIGHT, elem_id="overlay")
                table = gr.Dataframe(headers=TABLE_HEADERS, datatype=["str", "number", "number"], interactive=False,
                                     label="Classes present, by coverage", elem_id="classes")
            with gr.Column(scale=1):
                annotated = gr.AnnotatedImage(label="Hover a region (or a name below) to see its class", format="png",
                                              height=_PICTURE_HEIGHT, elem_id="annotated")
                download = gr.File(label="Label map (PNG of class ids, positions in the class names)",
                                   interactive=False, elem_id="label-png")
        outputs = [overlay, table, download, annotated, status]
        # Every event that touches a model shares one worker: one request at a time, a model never loaded twice.
        one_worker = dict(concurrency_id="model", concurrency_limit=1)
        button.click(segment, [image, labels, model_box, sliding], outputs, api_name="segment", **one_worker)
        labels.submit(segment, [image, labels, model_box, sliding], outputs, api_name=False, **one_worker)
        model_box.change(choose_model, [model_box], [sliding, status], api_name=False, **one_worker)
        preset.change(choose_preset, [preset, model_box], [labels], api_name=False, **one_worker)
    demo.queue(max_size=queue_size, default_concurrency_limit=1)
    demo.segmenter = segmenter
    return demo


def launch(demo, host: str = "127.0.0.1", port: int | None = 7860, block: bool = True, quiet: bool = False) -> str:
    """Serve `demo` on `host`:`port` (None: Gradio's choice from 7860 on) and return its address; with
    `block=False` return at once and leave it running until `demo.close()`."""
    examples = sorted({str(Path(path).parent) for path in example_images()})
    demo.launch(
        server_name=host, server_port=port, share=False, inbrowser=False, prevent_thread_lock=not block,
        show_error=False, quiet=quiet, allowed_paths=examples, ssr_mode=False, mcp_server=False, pwa=False,
        enable_monitoring=False, js=HOVER_JS,
    )
    return demo.local_url
