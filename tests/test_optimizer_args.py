"""optimizer_args: syntax and keys in the torch-free pre-flight, types and values before the model loads."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import dump, event_types, make_run_config, run_engine
from trainer.config import OPTIMIZERS, TrainConfig
from trainer.errors import TrainingError
from trainer.training.optimizer_args import OPTIMIZER_CLASSES, RESERVED_KEYS, optimizer_signature
from trainer.training.optimizers import check_optimizer_args, optimizer_class
from trainer.validation import validate

REPO = Path(__file__).resolve().parents[1]


def _issues(**fields):
    return [i for i in validate(TrainConfig(**fields)) if i.field == "optimizer_args"]


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_signature_read_from_source_is_the_real_one(name):
    cls = optimizer_class(name)
    parameters = inspect.signature(cls.__init__).parameters.values()
    real = [p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)][1:]
    signature = optimizer_signature(name)
    assert signature is not None and signature.class_name == cls.__name__
    assert signature.keys == tuple(k for k in real if k not in RESERVED_KEYS)
    assert signature.takes_any == any(p.kind == p.VAR_KEYWORD for p in parameters)


def test_every_optimizer_name_has_a_class():
    assert set(OPTIMIZER_CLASSES) == set(OPTIMIZERS)


def test_preflight_names_syntax_errors_unknown_and_reserved_keys():
    (syntax,) = _issues(optimizer_args="weight_decay=0.01 betas")
    assert (syntax.level, syntax.code, syntax.params["item"]) == ("error", "optimizer_args_syntax", "betas")

    unknown, = _issues(optimizer_args="weight_decy=0.01 eps=1e-8")
    assert (unknown.level, unknown.code, unknown.params["key"]) == ("error", "optimizer_args_unknown_key", "weight_decy")
    assert "Did you mean weight_decay?" in unknown.message and "AdamW" in unknown.message

    reserved, = _issues(optimizer_args="lr=0.1")
    assert (reserved.code, reserved.params["key"]) == ("optimizer_args_reserved_key", "lr")

    # CAME takes **kwargs: an unknown name is accepted silently there, so it is a warning.
    unchecked, = _issues(optimizer_type="CAME", optimizer_args="weight_decy=0.01")
    assert (unchecked.level, unchecked.code) == ("warning", "optimizer_args_unchecked_key")

    assert _issues(optimizer_args="weight_decay=0.01 betas=0.9,0.99") == []
    assert _issues(optimizer_type="Adafactor", optimizer_args="scale_parameter=False relative_step=False") == []


def test_preflight_keys_do_not_import_torch():
    code = ("import sys; from trainer.validation import validate; from trainer.config import TrainConfig; "
            "i = validate(TrainConfig(optimizer_args='epz=1')); assert any(x.code == 'optimizer_args_unknown_key' "
            "for x in i); assert 'torch' not in sys.modules, 'torch imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("args, key", [("eps=-1", "eps"), ("weight_decay='heavy'", "weight_decay"),
                                       ("betas=0.9", "betas"), ("weight_decay=0.01 amsgrad=True eps=-1", "eps")])
def test_check_names_the_refused_key(args, key):
    with pytest.raises(TrainingError) as refused:
        check_optimizer_args("AdamW", 1e-3, args)
    error = refused.value
    assert (error.code, error.field, error.params["keys"]) == ("optimizer_arg_rejected", "optimizer_args", [key])
    assert f"{key}=" in error.message and key in error.hint


def test_check_accepts_good_arguments_and_forced_ones_are_named():
    check_optimizer_args("AdamW", 1e-3, "weight_decay=0.01 betas=0.9,0.99 eps=1e-8")
    check_optimizer_args("Adafactor", 1e-3, "relative_step=True")
    with pytest.raises(TrainingError) as refused:
        check_optimizer_args("SGDNesterov", 1e-3, "nesterov=False")  # the factory sets it
    assert refused.value.params["keys"] == ["nesterov"]


def test_engine_refuses_an_invalid_value_before_loading_the_model(tiny_sd1, image_root, tmp_path):
    cfg = make_run_config(tmp_path, tiny_sd1, image_root, optimizer_args="weight_decay=0.01 eps=-1")
    proc, events = run_engine(cfg, tmp_path)
    assert proc.returncode == 1, dump(events)
    error = next(e for e in events if e["type"] == "error")
    assert (error["code"], error["field"], error["params"]["keys"]) == ("optimizer_arg_rejected", "optimizer_args",
                                                                         ["eps"]), dump(events)
    assert not any(e["type"] == "log" and e["message"].startswith("loading model") for e in events), dump(events)
    assert "start" not in event_types(events)
