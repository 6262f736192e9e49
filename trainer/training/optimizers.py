"""Optimizer factory: sd-scripts' optimizer names mapped onto maintained packages."""

from __future__ import annotations

import ast
from typing import Any, Callable

import torch

from trainer.errors import TrainingError


def parse_optimizer_args(text: str) -> dict[str, Any]:
    """'weight_decay=0.01 betas=0.9,0.99' -> {'weight_decay': 0.01, 'betas': (0.9, 0.99)}.

    Values go through ast.literal_eval as in sd-scripts; a comma list becomes a tuple.
    """
    args: dict[str, Any] = {}
    for item in text.split():
        if "=" not in item:
            raise TrainingError("bad_optimizer_args", f"optimizer argument {item!r} is not key=value",
                                field="optimizer_args", hint="Write arguments as key=value separated by spaces, "
                                "e.g. weight_decay=0.01 betas=0.9,0.99")
        key, value = item.split("=", 1)
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parsed = value  # plain words such as True/False are handled by literal_eval; others stay text
        args[key] = parsed
    return args


def _bnb(name: str) -> Callable[..., torch.optim.Optimizer]:
    try:
        import bitsandbytes as bnb
    except ImportError as exc:
        raise TrainingError("missing_package", f"{name} needs the bitsandbytes package, which failed to import: {exc}",
                            field="optimizer_type", hint="Install bitsandbytes, or pick AdamW.") from exc
    return getattr(bnb.optim, name)


def _sgd_nesterov(params: Any, **kw: Any) -> torch.optim.Optimizer:
    kw.setdefault("momentum", 0.9)
    return torch.optim.SGD(params, nesterov=True, **kw)


def _sgd_nesterov_8bit(params: Any, **kw: Any) -> torch.optim.Optimizer:
    kw.setdefault("momentum", 0.9)
    return _bnb("SGD8bit")(params, nesterov=True, **kw)


def _lion(params: Any, **kw: Any) -> torch.optim.Optimizer:
    from lion_pytorch import Lion

    return Lion(params, **kw)


def _adafactor(params: Any, **kw: Any) -> torch.optim.Optimizer:
    from transformers.optimization import Adafactor

    # Explicit learning rates (not Adafactor's own relative step) unless the user asks otherwise,
    # so the UNet / text-encoder learning rates mean what the form says.
    kw.setdefault("relative_step", False)
    kw.setdefault("scale_parameter", False)
    kw.setdefault("warmup_init", False)
    if kw["relative_step"]:
        for group in params:
            group["lr"] = None
        kw.pop("lr", None)
    return Adafactor(params, **kw)


def _prodigy(params: Any, **kw: Any) -> torch.optim.Optimizer:
    from prodigyopt import Prodigy

    return Prodigy(params, **kw)


def _dadapt_adam(params: Any, **kw: Any) -> torch.optim.Optimizer:
    from dadaptation import DAdaptAdam

    return DAdaptAdam(params, **kw)


def _came(params: Any, **kw: Any) -> torch.optim.Optimizer:
    from pytorch_optimizer import CAME

    return CAME(params, **kw)


OPTIMIZER_FACTORIES: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "AdamW": lambda params, **kw: torch.optim.AdamW(params, **kw),
    "AdamW8bit": lambda params, **kw: _bnb("AdamW8bit")(params, **kw),
    "PagedAdamW8bit": lambda params, **kw: _bnb("PagedAdamW8bit")(params, **kw),
    "Lion": _lion,
    "Lion8bit": lambda params, **kw: _bnb("Lion8bit")(params, **kw),
    "SGDNesterov": _sgd_nesterov,
    "SGDNesterov8bit": _sgd_nesterov_8bit,
    "Adafactor": _adafactor,
    "Prodigy": _prodigy,
    "DAdaptAdam": _dadapt_adam,
    "CAME": _came,
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
    except TypeError as exc:
        raise TrainingError("bad_optimizer_args", f"{name} does not accept these arguments: {exc}",
                            field="optimizer_args", hint="Remove or rename the extra optimizer arguments.") from exc


def describe_optimizer(name: str, args_text: str) -> str:
    """ss_optimizer as sd-scripts writes it: 'module.Class(key=value,...)'."""
    args = parse_optimizer_args(args_text)
    inner = ",".join(f"{k}={v}" for k, v in args.items())
    return f"{name}({inner})" if inner else name
