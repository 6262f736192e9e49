"""Start the LoRA GUI: a local web page (Gradio) that trains LoRA adapters for Stable Diffusion.

    python app.py                       # http://127.0.0.1:7860
    python app.py --inbrowser           # ... and open it in the browser
    python app.py --host 0.0.0.0        # reachable from other computers (no password!)

The web process never imports torch; training runs in `python -m trainer --config run.json`.
"""

from __future__ import annotations

import argparse
import atexit
import os
import signal
import socket
import sys
import webbrowser

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# HF_HUB_OFFLINE is not set here: the engine sets it for itself (it never goes online), and this process goes
# online only when the user presses "Download from the Hub" (lora_gui/hub_download.py); HF_HUB_OFFLINE=1 set by
# the user forbids that too.

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="LoRA training GUI (opens in your browser).")
    ap.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default 127.0.0.1: this computer only; 0.0.0.0: every network)")
    ap.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    ap.add_argument("--inbrowser", action="store_true", help="open the page in the default browser")
    ap.add_argument("--lang", choices=("auto", "en", "ja"), default="auto",
                    help="page language (default: the browser's language)")
    ap.add_argument("--preset", default="cpu_demo", help="preset loaded when the page opens (default cpu_demo)")
    ap.add_argument("--no-demo", action="store_true", help="do not create the demo model on first start")
    return ap.parse_args(argv)


def port_in_use(host: str, port: int) -> bool:
    probe = "127.0.0.1" if host in ("0.0.0.0", "") else host
    with socket.socket(socket.AF_INET6 if ":" in probe else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((probe, port)) == 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # "press Ctrl+C here to quit" holds even when the app was started with SIGINT ignored (a shell's `cmd &`
    # or nohup passes that on, and Python then installs no KeyboardInterrupt handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from lora_gui import APP_DIR

    os.chdir(APP_DIR)  # relative paths in presets and the demo live here
    url = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}"
    if port_in_use(args.host, args.port):
        print(f"Port {args.port} is already in use: the LoRA GUI may already be running at {url}\n"
              f"(to start another copy, use --port {args.port + 1}).", file=sys.stderr)
        if args.inbrowser:
            webbrowser.open(url)
        return 1

    remote = "" if args.host in LOCAL_HOSTS else f"{args.host}:{args.port}"
    if remote:
        print(f"WARNING: listening on {remote}: anyone who can reach this computer on the network can use the "
              "page, start training and read files in its folders. There is no password.", file=sys.stderr)

    from lora_gui import presets
    from lora_gui.demo import demo_ready, ensure_demo
    from lora_gui.jobs import JobManager
    from lora_gui.paths import job_record_path
    from lora_gui.tools_runner import ToolRunner
    from lora_gui.ui import CSS_PATH, JS_PATH, build_app
    from trainer.config import TrainConfig

    if not args.no_demo and not demo_ready():
        print("Writing the demo images and run file for the shipped toy model (first start only)...", file=sys.stderr,
              flush=True)
        ok, message = ensure_demo()
        if message:
            print(message, file=sys.stderr)

    try:
        initial = presets.load_preset(args.preset).config
        initial_preset = args.preset
    except presets.PresetError as exc:
        print(f"preset {args.preset!r} not loaded ({exc.key}); starting with defaults", file=sys.stderr)
        initial, initial_preset = TrainConfig(), ""

    manager = JobManager(record_path=job_record_path())  # a restarted server finds its running job
    atexit.register(manager.shutdown)
    tools = ToolRunner()
    atexit.register(tools.shutdown)
    lang = "en" if args.lang == "auto" else args.lang
    demo = build_app(initial=initial, initial_preset=initial_preset, manager=manager, lang=lang,
                     follow_browser=args.lang == "auto", remote_warning=remote, tools=tools)
    print(f"LoRA GUI: {url}  (press Ctrl+C here to quit)", file=sys.stderr, flush=True)
    _patient_localhost_check()
    demo.queue(default_concurrency_limit=4).launch(
        server_name=args.host, server_port=args.port, inbrowser=args.inbrowser, share=False, show_error=True,
        quiet=True, css=CSS_PATH.read_text(encoding="utf-8"), js=JS_PATH.read_text(encoding="utf-8"), footer_links=[],
        allowed_paths=[str(APP_DIR / "demo")], theme=_theme())
    return 0


def _patient_localhost_check(seconds: float = 120.0) -> None:
    """Gradio's launch() asks its own page once with a 3-second timeout and, when that times out, stops with
    "localhost is not accessible". Building this page's first answer takes longer than that on a busy
    2-core machine, so the same check waits for an answer up to `seconds` instead (Gradio has no setting)."""
    import time

    import httpx
    from gradio import networking

    def url_ok(address: str) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                if httpx.head(address, timeout=30, verify=False).status_code < 400:
                    return True
            except (httpx.ConnectError, httpx.TimeoutException):
                pass
            time.sleep(0.5)
        return False

    networking.url_ok = url_ok


def _theme():
    import gradio as gr

    # local fonts only: the page must work offline
    return gr.themes.Soft(primary_hue="indigo", secondary_hue="slate", neutral_hue="slate",
                          font=["system-ui", "Segoe UI", "Hiragino Sans", "Noto Sans CJK JP", "Meiryo", "sans-serif"],
                          font_mono=["ui-monospace", "Consolas", "Menlo", "monospace"])


if __name__ == "__main__":
    sys.exit(main())
