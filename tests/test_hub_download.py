"""Model download from the Hub (lora_gui.hub_download) against a local hub-shaped server: what is picked,
progress, resume after a cut connection, and the messages when the Hub cannot be reached."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from hub_server import TEST_REPO as REPO, HubServer
from lora_gui.hub_download import HubDownloader, HubDownloadError, pick_files


def test_pick_files_takes_full_precision_diffusers_weights_only():
    names = ["model_index.json", "README.md", "v1-5-pruned.ckpt", "v1-5-pruned.safetensors",
             "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.bin",
             "unet/diffusion_pytorch_model.fp16.safetensors", "unet/diffusion_flax_model.msgpack",
             "text_encoder/config.json", "text_encoder/pytorch_model.bin", "text_encoder/model.fp16.safetensors",
             "tokenizer/vocab.json", "tokenizer/merges.txt", "tokenizer/tokenizer_config.json",
             "scheduler/scheduler_config.json", "vae_encoder/model.onnx",
             "text_encoder_2/model.safetensors.index.json", "text_encoder_2/model-00001-of-00002.safetensors",
             "text_encoder_2/model-00002-of-00002.safetensors", "text_encoder_2/config.json"]
    assert pick_files(names) == sorted([
        "model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
        "text_encoder/config.json", "text_encoder/pytorch_model.bin",  # no full-precision safetensors: the .bin
        "tokenizer/vocab.json", "tokenizer/merges.txt", "tokenizer/tokenizer_config.json",
        "scheduler/scheduler_config.json", "text_encoder_2/model.safetensors.index.json",
        "text_encoder_2/model-00001-of-00002.safetensors", "text_encoder_2/model-00002-of-00002.safetensors",
        "text_encoder_2/config.json"])
    assert pick_files(["README.md", "sd_xl_base_1.0.safetensors"]) == ["sd_xl_base_1.0.safetensors"]
    with pytest.raises(HubDownloadError, match="neither a diffusers model"):
        pick_files(["a.safetensors", "b.safetensors"])
    with pytest.raises(HubDownloadError, match="no full-precision"):
        pick_files(["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.fp16.safetensors"])


@pytest.fixture(autouse=True)
def online(monkeypatch):
    """The app's process is online unless the user set HF_HUB_OFFLINE (the tests set it for the engine)."""
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def hub(tiny_sd1) -> HubServer:
    with HubServer() as server:
        server.add_folder(REPO, tiny_sd1)
        yield server


def test_download_fills_the_cache_the_engine_reads(hub, tiny_sd1, tmp_path, monkeypatch):
    from huggingface_hub import try_to_load_from_cache

    cache = tmp_path / "cache"
    downloader = HubDownloader(endpoint=hub.url, cache_dir=str(cache))
    downloader.start(REPO)
    state = downloader.wait(120)
    assert state.status == "done", state.message
    assert state.result == REPO and state.files_done == state.files_total > 0
    assert state.done_bytes == state.total_bytes > 0
    index = try_to_load_from_cache(REPO, "model_index.json", cache_dir=str(cache))
    snapshot = Path(index).parent
    for name in pick_files(list(hub.repos[REPO])):  # byte for byte what the server holds
        assert (snapshot / name).read_bytes() == (tiny_sd1 / name).read_bytes(), name

    # the engine's model detection finds the id in the cache it reads (HF_HUB_CACHE)
    from trainer.families.detect import detect_model
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants as constants
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    info = detect_model(REPO)
    assert info.family == "sd1" and Path(info.path) == snapshot


def test_a_cut_transfer_resumes_at_the_byte_it_reached(hub, tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    # the tiny model's weights are smaller than one 10 MB transfer chunk, which is written only when whole
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)
    weights = "unet/diffusion_pytorch_model.safetensors"
    half = len(hub.repos[REPO][weights]) // 2 // (64 * 1024) * (64 * 1024)  # a chunk's end: all of it was written // (64 * 1024) * (64 * 1024)  # at a chunk's end: all of it was written
    hub.cut_at[weights] = half
    downloader = HubDownloader(endpoint=hub.url, cache_dir=str(tmp_path / "cache"))
    downloader.start(REPO)
    state = downloader.wait(120)
    assert state.status == "done", state.message
    assert [r for r in hub.ranges if r[0] == weights] == [(weights, half)]  # it asked for the rest only
    assert state.done_bytes == state.total_bytes  # the resumed part is not counted twice


def test_a_failed_download_pressed_again_keeps_the_finished_files(hub, tmp_path):
    weights = "unet/diffusion_pytorch_model.safetensors"
    hub.refused.add(weights)  # the network goes away at the UNet: huggingface_hub's own retries give up
    downloader = HubDownloader(endpoint=hub.url, cache_dir=str(tmp_path / "cache"))
    downloader.start(REPO)
    failed = downloader.wait(180)
    assert failed.status == "failed" and failed.current == ""
    assert "cut" in failed.message and "Download again" in failed.message, failed.message
    finished = {f for f in pick_files(list(hub.repos[REPO])) if f < weights}
    assert finished and finished <= set(hub.gets)

    hub.refused.clear()
    hub.gets.clear()
    downloader.start(REPO)
    done = downloader.wait(120)
    assert done.status == "done", done.message
    assert not finished & set(hub.gets)  # only what was missing was fetched
    assert done.done_bytes == done.total_bytes


def test_unreachable_hub_and_offline_mode_say_what_to_do(tmp_path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens there once closed
    downloader = HubDownloader(endpoint=closed, cache_dir=str(tmp_path / "cache"))
    downloader.start(REPO)
    state = downloader.wait(60)
    assert state.status == "failed" and "cannot be reached" in state.message and "offline" in state.message

    import huggingface_hub.constants as constants
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    downloader.start(REPO)
    state = downloader.wait(60)
    assert state.status == "failed" and "HF_HUB_OFFLINE" in state.message, state.message


def test_unknown_repository_is_named(hub, tmp_path):
    downloader = HubDownloader(endpoint=hub.url, cache_dir=str(tmp_path / "cache"))
    downloader.start("nobody/nothing")
    state = downloader.wait(60)
    assert state.status == "failed" and "nobody/nothing was not found" in state.message, state.message
    assert not shutil.os.path.exists(tmp_path / "cache" / "models--nobody--nothing" / "snapshots")
