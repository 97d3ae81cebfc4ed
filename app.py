"""The web demo as a Hugging Face Space (`sdk: gradio`, `app_file: app.py`): the same app as `fgaseg demo`.

Environment: `FGASEG_DEMO_MODEL` (a model folder or Hub id shown first; default: the shipped demo model),
`GRADIO_SERVER_NAME` / `GRADIO_SERVER_PORT` (set by Spaces; default 127.0.0.1:7860).
"""

import os
import sys
from pathlib import Path

try:
    import fgaseg_hf  # noqa: F401
except ImportError:  # a Space built from this repository without installing it
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from fgaseg_hf.demo.ui import build_app, launch

demo = build_app(model=os.environ.get("FGASEG_DEMO_MODEL") or None)

if __name__ == "__main__":
    launch(demo, host=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
           port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
