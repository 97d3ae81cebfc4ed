"""The web demo: upload a photo, type classes, see the segmentation.

`fgaseg demo` serves it on localhost (`main`); `app.py` at the repository root is the same app for a Hugging Face
Space. The computation (`segmenter`) needs no Gradio; the page (`ui`) imports Gradio when it is built.
"""

from .segmenter import DEMO_MODEL_CHOICE, MODEL_VOCABULARY, VOCABULARY_PRESETS, DemoResult, DemoSegmenter

__all__ = ["DEMO_MODEL_CHOICE", "MODEL_VOCABULARY", "VOCABULARY_PRESETS", "DemoResult", "DemoSegmenter", "main"]


def main(argv=None) -> int:
    from .cli import main as run

    return run(argv)
