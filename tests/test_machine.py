"""One torch-free CUDA guess: the form and the pre-flight agree on whether a GPU is there."""

from __future__ import annotations

import pytest

from lora_gui import sysinfo
from trainer import machine
from trainer.config import TrainConfig
from trainer.preflight.registry import Context


@pytest.fixture
def fresh_guess():
    machine.cuda_likely.cache_clear()
    yield
    machine.cuda_likely.cache_clear()


@pytest.mark.parametrize("forced", ["0", "1"])
def test_the_form_and_validation_share_the_guess(monkeypatch, fresh_guess, forced):
    monkeypatch.setenv(machine.ASSUME_CUDA_ENV, forced)
    assert sysinfo.cuda_available() is (forced == "1")
    assert Context(TrainConfig()).cuda is (forced == "1")


@pytest.mark.parametrize("hidden", ["", "-1"])
def test_hidden_gpus_count_as_none(monkeypatch, fresh_guess, hidden):
    monkeypatch.delenv(machine.ASSUME_CUDA_ENV, raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
    assert not machine.cuda_likely()
    assert not sysinfo.xformers_usable()


def test_windows_driver_dll_counts(monkeypatch, fresh_guess, tmp_path):
    (tmp_path / "System32").mkdir()
    (tmp_path / "System32" / "nvcuda.dll").write_bytes(b"")
    monkeypatch.delenv(machine.ASSUME_CUDA_ENV, raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(machine.sys, "platform", "win32")
    monkeypatch.setenv("SystemRoot", str(tmp_path))
    monkeypatch.setattr(machine.Path, "exists", lambda self: self.name == "nvcuda.dll" and self.parent.parent == tmp_path)
    assert machine.cuda_likely()
