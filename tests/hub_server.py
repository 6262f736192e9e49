"""A local HTTP server shaped like the Hugging Face Hub, for download tests (never the internet).

It answers what huggingface_hub asks when it downloads a model: the model info with its files and sizes
(`/api/models/<repo>[/revision/<rev>]`) and each file (`HEAD` / `GET /<repo>/resolve/<rev>/<file>`, with
ETag, X-Repo-Commit, Content-Length and Range). `cut_at[file] = offset`: a transfer of that file that
starts before the offset drops its connection there (a flaky network); `refused` files drop every transfer
before its first byte (a network that is gone). Point huggingface_hub at it with
HF_ENDPOINT=<url> (or the `endpoint` argument).
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional

COMMIT = "0123456789abcdef0123456789abcdef01234567"
TEST_REPO = "lora-gui-test/tiny-sd"  # the id the tests serve the tiny SD1 model under


class HubServer:
    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}
        self.cut_at: dict[str, int] = {}
        self.refused: set[str] = set()
        self.ranges: list[tuple[str, int]] = []  # (file, first byte) of every GET that asked for a range
        self.gets: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                server._answer(self, body=True)

            def do_HEAD(self) -> None:
                server._answer(self, body=False)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def add_folder(self, repo_id: str, folder: Path) -> None:
        """Serve every file under `folder` as the repository `repo_id`."""
        self.repos[repo_id] = {p.relative_to(folder).as_posix(): p.read_bytes()
                               for p in sorted(folder.rglob("*")) if p.is_file()}

    def __enter__(self) -> "HubServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # ---- answers ---------------------------------------------------------------------------------------
    def _answer(self, req: BaseHTTPRequestHandler, *, body: bool) -> None:
        path = req.path.split("?", 1)[0]
        if path.startswith("/api/models/"):
            return self._model_info(req, path[len("/api/models/"):], body)
        parts = path.lstrip("/").split("/")
        if len(parts) >= 5 and parts[2] == "resolve":
            return self._file(req, "/".join(parts[:2]), "/".join(parts[4:]), body)
        self._send(req, 404, b"", {"X-Error-Code": "EntryNotFound"}, body)

    def _model_info(self, req: BaseHTTPRequestHandler, rest: str, body: bool) -> None:
        repo_id = "/".join(rest.split("/")[:2])
        files = self.repos.get(repo_id)
        if files is None:
            return self._send(req, 404, b'{"error": "Repository not found"}', {"X-Error-Code": "RepoNotFound"}, body)
        info = {"id": repo_id, "modelId": repo_id, "sha": COMMIT, "private": False,
                "siblings": [{"rfilename": name, "size": len(data)} for name, data in files.items()]}
        self._send(req, 200, json.dumps(info).encode(), {"Content-Type": "application/json"}, body)

    def _file(self, req: BaseHTTPRequestHandler, repo_id: str, name: str, body: bool) -> None:
        data = self.repos.get(repo_id, {}).get(name)
        if data is None:
            return self._send(req, 404, b"", {"X-Error-Code": "EntryNotFound"}, body)
        headers = {"ETag": f'"{hashlib.sha256(data).hexdigest()}"', "X-Repo-Commit": COMMIT,
                   "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        start = _range_start(req.headers.get("Range"))
        if body:
            self.gets.append(name)
            if start:
                self.ranges.append((name, start))
        cut = self.cut_at.get(name) if body else None
        cut = 0 if body and name in self.refused else None if cut is None or start >= cut else cut
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        self._send(req, 206 if start else 200, data[start:], headers, body,
                   cut=None if cut is None else max(0, cut - start))

    @staticmethod
    def _send(req: BaseHTTPRequestHandler, code: int, data: bytes, headers: dict, body: bool, *,
              cut: Optional[int] = None) -> None:
        """`cut`: send only that many bytes of `data`, then drop the connection."""
        req.send_response(code)
        for key, value in headers.items():
            req.send_header(key, value)
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        if not body:
            return
        req.wfile.write(data if cut is None else data[:cut])
        req.wfile.flush()
        if cut is not None:
            req.close_connection = True


def _range_start(header: Optional[str]) -> int:
    if not header or not header.startswith("bytes="):
        return 0
    return int(header[len("bytes="):].split("-", 1)[0] or 0)
