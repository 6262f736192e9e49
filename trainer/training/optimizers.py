"""Optimizer factory: sd-scripts' optimizer names mapped onto maintained packages (OPTIMIZER_CLASSES).

`check_optimizer_args` builds the chosen optimizer on one dummy parameter before the model loads, so a
wrong key, type or value in `optimizer_args` is reported with the key named instead of failing later.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Optional

import torch

from trainer.errors import TrainingError
from trainer.training.optimizer_args import OPTIMIZER_CLASSES, parse_optimizer_args

__all__ = ["OPTIMIZER_FACTORIES", "build_optimizer", "check_optimizer_args", "describe_optimizer",
           "effective_optimizer_args", "parse_optimizer_args"]
# The packages to name when an optimizer's module cannot be imported.
PACKAGES = {"bitsandbytes": "bitsandbytes", "lion_pytorch": "lion-pytorch", "prodigyopt": "prodigyopt",
            "dadaptation": "dadaptation", "pytorch_optimizer": "pytorch-optimizer", "transformers": "transformers"}


def optimizer_class(name: str) -> type:
    """The class behind optimizer `name`, imported from the module OPTIMIZER_CLASSES names."""
    module, class_name = OPTIMIZER_CLASSES[name]
    try:
        return getattr(importlib.import_module(module), class_name)
    except ImportError as exc:
        package = PACKAGES.get(module.split(".")[0], module.split(".")[0])
        raise TrainingError("missing_package", f"{name} needs the {package} package, which failed to import: {exc}",
                            field="optimizer_type", hint=f"Install {package}, or pick AdamW.") from exc


def _plain(name: str) -> Callable[..., torch.optim.Optimizer]:
    return lambda params, **kw: optimizer_class(name)(params, **kw)


def _nesterov(name: str) -> Callable[..., torch.optim.Optimizer]:
    def build(params: Any, **kw: Any) -> torch.optim.Optimizer:
        kw.setdefault("momentum", 0.9)
        return optimizer_class(name)(params, nesterov=True, **kw)

    return build


def _adafactor(params: Any, **kw: Any) -> torch.optim.Optimizer:
    # Explicit learning rates (not Adafactor's own relative step) unless the user asks otherwise,
    # so the UNet / text-encoder learning rates mean what the form says.
    kw.setdefault("relative_step", False)
    kw.setdefault("scale_parameter", False)
    kw.setdefault("warmup_init", False)
    if kw["relative_step"]:
        for group in params:
            group["lr"] = None
        kw.pop("lr", None)
    return optimizer_class("Adafactor")(params, **kw)


OPTIMIZER_FACTORIES: dict[str, Callable[..., torch.optim.Optimizer]] = {
    name: _nesterov(name) if name.startswith("SGDNesterov") else _adafactor if name == "Adafactor" else _plain(name)
    for name in OPTIMIZER_CLASSES
}


def build_optimizer(name: str, param_groups: list[dict[str, Any]], lr: float, args_text: str) -> torch.optim.Optimizer:
    if name not in OPTIMIZER_FACTORIES:
        raise TrainingError("unknown_optimizer", f"unknown optimizer {name!r}", field="optimizer_type",
                            hint="Pick one of: " + ", ".join(OPTIMIZER_FACTORIES))
    if not param_groups:
        raise TrainingError("nothing_to_train", "no LoRA parameters to train: the UNet and the text encoder(s) "
                            "are all switched off or at learning rate 0", field="unet_lr",
                            hint="Give the UNet or a text encoder a learning rate above 0 (and, for SDXL, "
                            "keep at least one text-encoder switch on if only the text encoder is trained).")
    kwargs = parse_optimizer_args(args_text)
    try:
        return OPTIMIZER_FACTORIES[name](param_groups, lr=lr, **kwargs)
    except (TypeError, ValueError) as exc:
        if not kwargs:
            raise
        raise _rejected(name, kwargs, exc, _culprits(name, lr, kwargs)) from exc


def effective_optimizer_args(optimizer_type: str, lr_scheduler: str, args_text: str) -> str:
    """The arguments the optimizer is built with: the adafactor scheduler needs Adafactor's relative step."""
    if optimizer_type == "Adafactor" and lr_scheduler == "adafactor" and "relative_step" not in args_text:
        return (args_text + " relative_step=True").strip()
    return args_text


def check_optimizer_args(name: str, lr: float, args_text: str) -> None:
    """Build optimizer `name` with `args_text` on one dummy parameter and take one step, so that an unknown
    key, a wrong type or an invalid value (eps=-1) is refused before the model loads, with the key named."""
    if name not in OPTIMIZER_FACTORIES:
        return  # build_optimizer names the field
    kwargs = parse_optimizer_args(args_text)
    if not kwargs:
        return
    error = _try_optimizer(name, lr, kwargs)
    if error is not None:
        raise _rejected(name, kwargs, error, _culprits(name, lr, kwargs)) from error


def _try_optimizer(name: str, lr: float, kwargs: dict[str, Any]) -> Optional[Exception]:
    """The TypeError / ValueError that building and stepping the optimizer with `kwargs` raises, else None."""
    param = torch.nn.Parameter(torch.zeros(4, 4))
    try:
        optimizer = OPTIMIZER_FACTORIES[name]([{"params": [param], "lr": lr}], lr=lr, **dict(kwargs))
        param.grad = torch.full_like(param, 0.1)
        optimizer.step()
    except (TypeError, ValueError) as exc:
        return exc
    return None


def _culprits(name: str, lr: float, kwargs: dict[str, Any]) -> list[str]:
    """The keys that are refused on their own; all keys when only their combination is."""
    alone = [key for key in kwargs if _try_optimizer(name, lr, {key: kwargs[key]}) is not None]
    return alone or list(kwargs)


def _rejected(name: str, kwargs: dict[str, Any], exc: Exception, keys: list[str]) -> TrainingError:
    given = " ".join(f"{key}={kwargs[key]!r}" for key in keys)
    return TrainingError(
        "optimizer_arg_rejected", f"{name} refuses the optimizer argument {given}: {exc}", field="optimizer_args",
        hint=f"Correct or remove {', '.join(keys)} in the optimizer arguments (the names and values {name} "
             "accepts are in its documentation), or clear them to use its defaults.",
        params={"optimizer": name, "keys": keys, "error": str(exc)})


def describe_optimizer(name: str, args_text: str) -> str:
    """ss_optimizer as sd-scripts writes it: 'module.Class(key=value,...)'."""
    args = parse_optimizer_args(args_text)
    inner = ",".join(f"{k}={v}" for k, v in args.items())
    return f"{name}({inner})" if inner else name
