"""`fgaseg demo [--model PATH_OR_ID] [--host 127.0.0.1] [--port N]`: serve the web demo until interrupted."""

from __future__ import annotations

import argparse
import sys

from ..segment import SegmentError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fgaseg demo", description="serve the web demo (Gradio) on this machine")
    parser.add_argument("--model", help="model folder or Hub id shown first (default: the shipped demo model)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default: %(default)s, this machine only; 0.0.0.0 opens it to the "
                        "network)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: %(default)s; 0: any free port)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: %(default)s)")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16 (default: %(default)s)")
    parser.add_argument("--queue-size", type=int, default=None,
                        help="requests that may wait while one runs; more are refused (default: 16)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not 0 <= args.port <= 65535:
        print(f"error: --port must lie in [0, 65535], got {args.port}", file=sys.stderr)
        return 2
    try:
        from .ui import DEFAULT_QUEUE_SIZE, build_app, import_gradio, launch

        import_gradio()
    except ImportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from .segmenter import DemoSegmenter

    if args.device == "cpu":
        from ..cpu_memory import keep_freed_memory

        keep_freed_memory()
    import signal

    def stop(signum, frame):
        # A service manager's SIGTERM ends it like Ctrl+C: the server closes and the label PNGs are removed.
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    segmenter = None
    try:
        segmenter = DemoSegmenter(device=args.device, dtype=args.dtype)
        queue_size = DEFAULT_QUEUE_SIZE if args.queue_size is None else args.queue_size
        demo = build_app(segmenter, model=args.model, queue_size=queue_size)
        port = args.port or _free_port(args.host)
        print(f"serving the demo on http://{args.host}:{port} (Ctrl+C stops it)", file=sys.stderr)
        launch(demo, host=args.host, port=port, block=True, quiet=True)
    except (SegmentError, ValueError, TypeError) as error:
        print(f"error: {str(error).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    except OSError as error:  # the port is taken, or the address cannot be bound
        print(f"error: cannot serve on {args.host}:{args.port}: {str(error).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    finally:
        if segmenter is not None:
            segmenter.close()
    return 0


def _free_port(host: str) -> int:
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]
