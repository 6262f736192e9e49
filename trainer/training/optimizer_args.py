"""Optimizer arguments (`optimizer_args`) without torch: parsing, syntax problems, and the keys each
optimizer's constructor really takes, read from the installed package's source.

The keys come from the `__init__` of the class in OPTIMIZER_CLASSES, found with `importlib.util.find_spec`
on the top-level package (which imports nothing) and read with `ast`. So the page can name an unknown key
as the user types, without importing torch and without a second, hand-typed list of signatures. Types and
values need the real class: the engine checks those before it loads the model (optimizers.py).
"""

from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

from trainer.errors import TrainingError

SYNTAX_HINT = "Write arguments as key=value separated by spaces, e.g. weight_decay=0.01 betas=0.9,0.99"
# sd-scripts' optimizer name -> (module that defines the class, class name). The engine imports the same classes.
OPTIMIZER_CLASSES: dict[str, tuple[str, str]] = {
    "AdamW": ("torch.optim.adamw", "AdamW"),
    "AdamW8bit": ("bitsandbytes.optim.adamw", "AdamW8bit"),
    "PagedAdamW8bit": ("bitsandbytes.optim.adamw", "PagedAdamW8bit"),
    "Lion": ("lion_pytorch.lion_pytorch", "Lion"),
    "Lion8bit": ("bitsandbytes.optim.lion", "Lion8bit"),
    "SGDNesterov": ("torch.optim.sgd", "SGD"),
    "SGDNesterov8bit": ("bitsandbytes.optim.sgd", "SGD8bit"),
    "Adafactor": ("transformers.optimization", "Adafactor"),
    "Prodigy": ("prodigyopt.prodigy", "Prodigy"),
    "DAdaptAdam": ("dadaptation.dadapt_adam", "DAdaptAdam"),
    "CAME": ("pytorch_optimizer.optimizer.came", "CAME"),
}
# Set by the learning-rate fields, never by optimizer_args.
RESERVED_KEYS = ("params", "lr")


def parse_optimizer_args(text: str) -> dict[str, Any]:
    """'weight_decay=0.01 betas=0.9,0.99' -> {'weight_decay': 0.01, 'betas': (0.9, 0.99)}.

    Values go through ast.literal_eval as in sd-scripts; a comma list becomes a tuple, other text stays text.
    """
    problems = syntax_problems(text)
    if problems:
        item, message = problems[0]
        raise TrainingError("bad_optimizer_args", f"optimizer argument {message}", field="optimizer_args",
                            hint=SYNTAX_HINT, params={"item": item})
    args: dict[str, Any] = {}
    for item in text.split():
        key, value = item.split("=", 1)
        try:
            args[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            args[key] = value
    return args


def syntax_problems(text: str) -> list[tuple[str, str]]:
    """(item, English message) for every item of `text` that is not `key=value` with a Python name as key."""
    problems, seen = [], set()
    for item in text.split():
        key, equals, value = item.partition("=")
        if not equals or not value:
            problems.append((item, f"{item!r} is not key=value"))
        elif not key.isidentifier():
            problems.append((item, f"{item!r}: {key!r} is not an argument name"))
        elif key in seen:
            problems.append((item, f"{key!r} is given twice"))
        seen.add(key)
    return problems


@dataclass(frozen=True)
class OptimizerSignature:
    """The keyword arguments an optimizer's constructor names; `takes_any` when it also has **kwargs."""

    class_name: str
    keys: tuple[str, ...]
    takes_any: bool


@lru_cache(maxsize=None)
def optimizer_signature(name: str) -> Optional[OptimizerSignature]:
    """The constructor arguments of optimizer `name` (minus params and lr), None when its source cannot be read."""
    if name not in OPTIMIZER_CLASSES:
        return None
    module, class_name = OPTIMIZER_CLASSES[name]
    init = _find_init(_module_source(module), class_name)
    if init is None:
        return None
    args = init.args
    names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)][1:]  # without self
    keys = tuple(n for n in names if n not in RESERVED_KEYS)
    return OptimizerSignature(class_name, keys, takes_any=args.kwarg is not None)


def _module_source(module: str) -> Optional[Path]:
    """The .py file of `module`, found from its top-level package without importing anything."""
    top, *rest = module.split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    base = Path(next(iter(spec.submodule_search_locations))).joinpath(*rest)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _find_init(path: Optional[Path], class_name: str) -> Optional[ast.FunctionDef]:
    if path is None:
        return None
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            return next((f for f in node.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"), None)
    return None
