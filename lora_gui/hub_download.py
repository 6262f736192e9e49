"""Downloading a base model from the Hugging Face Hub into the local cache, when the user asks.

huggingface_hub does the transfer: its cache layout is what the engine and diffusers read offline, a cut
connection resumes at the byte it reached (a Range request), files already in the cache are not fetched
again, and HF_ENDPOINT / HF_HOME / HF_TOKEN / HF_HUB_OFFLINE are honoured. What it leaves to us: which files of a repository a LoRA trainer needs (a diffusers
repository also holds fp16 variants, ONNX and Flax copies and multi-GB single-file checkpoints), one
download at a time, and progress the page can poll. Torch-free: it runs in a thread of the web process.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from pathlib import PurePosixPath
from typing import Any, Optional

WEIGHT_SUFFIXES = (".safetensors", ".bin")
CONFIG_SUFFIXES = (".json", ".txt", ".model")  # configs, tokenizer vocabularies and merges


class HubDownloadError(Exception):
    """A download that cannot start or did not finish; the message says why and what to do."""


def pick_files(names: list[str]) -> list[str]:
    """The files of a repository that training needs.

    A diffusers repository (model_index.json): every component folder's configs and tokenizer files, and
    its full-precision weights, safetensors where there are any (else .bin), never the variants
    (`x.fp16.safetensors`) or other formats. Otherwise the repository's single .safetensors checkpoint.
    Raises HubDownloadError when neither layout is there."""
    if "model_index.json" in names:
        chosen = ["model_index.json"]
        folders: dict[str, list[str]] = {}
        for name in names:
            path = PurePosixPath(name)
            if len(path.parts) == 2:
                folders.setdefault(path.parts[0], []).append(name)
        for files in folders.values():
            chosen += [f for f in files if f.endswith(CONFIG_SUFFIXES)]
            weights = [f for f in files if f.endswith(WEIGHT_SUFFIXES) and "." not in _stem(f)]
            safetensors = [f for f in weights if f.endswith(".safetensors")]
            chosen += safetensors or weights
        if not any(f.endswith(WEIGHT_SUFFIXES) for f in chosen):
            raise HubDownloadError("This repository has no full-precision diffusers weights to download.")
        return sorted(chosen)
    singles = [n for n in names if "/" not in n and n.endswith(".safetensors")]
    if len(singles) == 1:
        return singles
    raise HubDownloadError("This repository is neither a diffusers model (no model_index.json) nor a single "
                           ".safetensors checkpoint" + (f" (it holds {len(singles)} of them)" if singles else "") +
                           ". Download the file you want yourself and choose its path.")


def _stem(name: str) -> str:
    """`unet/diffusion_pytorch_model.fp16.safetensors` -> `diffusion_pytorch_model.fp16`."""
    base = PurePosixPath(name).name
    for suffix in WEIGHT_SUFFIXES:
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base


@dataclass(frozen=True)
class DownloadState:
    repo_id: str = ""
    status: str = "idle"  # idle, running, done, failed
    done_bytes: int = 0
    total_bytes: int = 0
    current: str = ""  # the file being transferred
    files_done: int = 0
    files_total: int = 0
    message: str = ""  # failed: why and what to do
    result: str = ""  # done: what the model field should hold (the id, or a single file's path)
    started: float = 0.0


class HubDownloader:
    """One download at a time, in a thread; `state()` is what the page shows."""

    def __init__(self, endpoint: Optional[str] = None, cache_dir: Optional[str] = None):
        self.endpoint, self.cache_dir = endpoint, cache_dir  # None: huggingface_hub's (HF_ENDPOINT, HF_HOME)
        self._lock = threading.Lock()
        self._state = DownloadState()

    def state(self) -> DownloadState:
        with self._lock:
            return self._state

    def start(self, repo_id: str) -> DownloadState:
        """Begin downloading `repo_id` (owner/name); raises HubDownloadError if one is running."""
        with self._lock:
            if self._state.status == "running":
                raise HubDownloadError(f"{self._state.repo_id} is still downloading; wait for it to finish.")
            self._state = DownloadState(repo_id=repo_id, status="running", started=time.time())
        threading.Thread(target=self._run, args=(repo_id,), name="hub-download", daemon=True).start()
        return self.state()

    def wait(self, timeout: float) -> DownloadState:
        deadline = time.monotonic() + timeout
        while self.state().status == "running" and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.state()

    # ---- the thread ----------------------------------------------------------------------------
    def _run(self, repo_id: str) -> None:
        try:
            result = self._download(repo_id)
        except HubDownloadError as exc:
            self._update(status="failed", message=str(exc), current="")
        except Exception as exc:  # noqa: BLE001 - whatever the transfer raised, the page says it
            self._update(status="failed", message=explain(exc, repo_id), current="")
        else:
            self._update(status="done", result=result, current="")

    def _download(self, repo_id: str) -> str:
        from huggingface_hub import HfApi, hf_hub_download

        try:
            info = HfApi(endpoint=self.endpoint).model_info(repo_id, files_metadata=True)
        except Exception as exc:  # noqa: BLE001
            raise HubDownloadError(explain(exc, repo_id)) from exc
        sizes = {s.rfilename: int(s.size or 0) for s in (info.siblings or [])}
        files = pick_files(list(sizes))
        self._update(total_bytes=sum(sizes[f] for f in files), files_total=len(files))
        path = ""
        for name in files:
            self._update(current=name)
            # the default revision ("main"): the cache then records refs/main, which offline lookups read
            path = hf_hub_download(repo_id, name, endpoint=self.endpoint, cache_dir=self.cache_dir,
                                   tqdm_class=self._progress_class())
            with self._lock:
                done = self._state.files_done + 1
                finished = sum(sizes[f] for f in files[:done])
                self._state = replace(self._state, files_done=done, done_bytes=finished)
        return repo_id if "model_index.json" in files else path  # a single checkpoint: its file in the cache

    def _update(self, **changes: Any) -> None:
        with self._lock:
            self._state = replace(self._state, **changes)

    def _progress_class(self) -> type:
        """A tqdm that adds the bytes of the file being transferred to the state (and prints nothing)."""
        from tqdm.auto import tqdm

        downloader = self

        class Progress(tqdm):  # type: ignore[misc, valid-type]
            def __init__(self, *args: Any, **kwargs: Any):
                kwargs["disable"] = True
                super().__init__(*args, **kwargs)
                self._counted = 0
                self._count(int(kwargs.get("initial") or 0))  # the part an earlier try already has

            def update(self, n: float = 1) -> Optional[bool]:
                self._count(int(n or 0))
                return super().update(n)

            def _count(self, n: int) -> None:
                if n:
                    self._counted += n
                    with downloader._lock:
                        state = downloader._state
                        downloader._state = replace(state, done_bytes=state.done_bytes + n)

        return Progress


DOWNLOADER = HubDownloader()  # the server's one downloader: every page shows the same download


def explain(exc: BaseException, repo_id: str) -> str:
    """One sentence for what a Hub request raised, with what to do."""
    from huggingface_hub import errors

    name = type(exc).__name__
    if isinstance(exc, errors.OfflineModeIsEnabled):
        return ("Offline mode is on (HF_HUB_OFFLINE=1 or TRANSFORMERS_OFFLINE=1): nothing can be downloaded. Unset it to download, "
                "or choose a model folder or file on this computer.")
    if isinstance(exc, errors.GatedRepoError):
        return (f"{repo_id} is gated: accept its licence on huggingface.co and log in here with "
                "`hf auth login`, then try again.")
    if isinstance(exc, errors.RepositoryNotFoundError):
        return (f"{repo_id} was not found on the Hub (or it is private: log in with `hf auth login`). "
                "Check the id (owner/name).")
    if isinstance(exc, errors.RevisionNotFoundError):
        return f"{repo_id} has no such revision on the Hub."
    # by class name: huggingface_hub's HTTP client has moved between httpx and its fork httpx2
    kinds = {cls.__name__ for cls in type(exc).__mro__}
    if "TransportError" in kinds and not kinds & {"ConnectError", "TimeoutException"}:
        return (f"The connection to the Hub was cut ({name}) and did not come back. Press Download again: the "
                "files already downloaded are kept.")
    if isinstance(exc, (errors.LocalEntryNotFoundError, OSError)) or "TransportError" in kinds:
        return (f"The Hugging Face Hub cannot be reached ({name}): this computer looks offline. Connect and press "
                "Download again (files already downloaded are kept), or choose a model folder or file on this "
                "computer.")
    return f"The download of {repo_id} failed: {exc}"
