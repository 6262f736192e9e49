"""What "Print command" shows: the command Start runs, and the same run as an sd-scripts command line.
With several processes it is the accelerate launcher the engine starts (the same on every machine of a
cluster but for the machine rank in the run file).

The engine command must work when pasted into a terminal, so its run file is written where the
command says and the command changes into the app folder first (`-m trainer` is found there).
The sd-scripts line is derived from the field metadata (`sd_scripts` in trainer/config.py): field
names are sd-scripts argument names, and the few that are not are marked there.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lora_gui import engine, rules
from lora_gui.family import hidden_fields, model_family, traits_or_default
from lora_gui.jobs import training_request
from trainer.config import TrainConfig, iter_field_meta
from trainer.fileio import atomic_write_text

LORA_MODULE = "networks.lora"  # sd-scripts' LoRA; with conv_dim in --network_args it is LoCon


def shell_line(args: list[str]) -> str:
    """`args` quoted for this system's shell."""
    return subprocess.list2cmdline(args) if sys.platform == "win32" else shlex.join(args)


def engine_command_line(cfg: TrainConfig) -> tuple[str, Path]:
    """Write the run file Start would write and return (the command that runs it, the run file)."""
    request = training_request(cfg)
    for path, text in request.writes.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
    cd = ["cd", "/d", str(engine.engine_cwd())] if sys.platform == "win32" else ["cd", str(engine.engine_cwd())]
    command = engine.engine_launch_command(cfg, request.files.run_json)
    return f"{shell_line(cd)} && {shell_line(command)}", request.files.run_json


@dataclass
class SdScriptsCommand:
    text: str
    unsupported: list[tuple[str, Any]] = field(default_factory=list)  # (field, value) sd-scripts has no option for
    files: list[Path] = field(default_factory=list)  # written for it (the sample prompts)


def sd_scripts_command(cfg: TrainConfig) -> SdScriptsCommand:
    """`accelerate launch train_network.py --...` for the same run (sdxl_train_network.py for SDXL)."""
    family = model_family(cfg.pretrained_model_name_or_path)
    skipped = set(hidden_fields(family))
    states = rules.field_states(dict(cfg.to_dict(), _family=family))
    skipped |= {name for name, (enabled, _value) in states.items() if not enabled}
    defaults = TrainConfig()
    script = traits_or_default(family).sd_scripts_script
    args = ["accelerate", "launch", *_launch_options(cfg), script]
    network_args: list[str] = []
    result = SdScriptsCommand("")
    for f, meta in iter_field_meta():
        value, how = getattr(cfg, f.name), meta.get("sd_scripts", True)
        if f.name in skipped or how in ("implied", "launch"):
            continue
        if how is False:  # listed only when it changes something (at its default it is what sd-scripts does)
            if value != getattr(defaults, f.name):
                result.unsupported.append((f.name, value))
        elif how == "network_module":
            args += ["--network_module", LORA_MODULE]
        elif how == "network_args" or (how == "network_args_if_set" and value != getattr(defaults, f.name)):
            network_args.append(f"{f.name}={_text(value)}")
        elif how == "network_args_if_set":
            continue
        elif how == "file":
            if value.strip():
                path = Path(cfg.output_dir) / f"{cfg.output_name}.prompts.txt"
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_text(path, value.rstrip("\n") + "\n")
                result.files.append(path)
                args += [f"--{f.name}", str(path)]
        elif not (how == "unless_default" and value == getattr(defaults, f.name)):
            args += _flag(f.name, value, getattr(defaults, f.name))
    args += _train_part_flags(cfg)
    if network_args:
        args += ["--network_args", *network_args]
    result.text = shell_line(args)
    return result


def _launch_options(cfg: TrainConfig) -> list[str]:
    """The launcher's options: the Accelerate fields for several processes, else one CPU thread per
    process unless the field says otherwise (kohya_ss's GUI gives the same option)."""
    options = engine.accelerate_launch_options(cfg)
    if not options:
        options = ["--num_cpu_threads_per_process", str(cfg.num_cpu_threads_per_process or 1)]
    return options


def _flag(name: str, value: Any, default: Any) -> list[str]:
    """One option as sd-scripts takes it; nothing for off, empty, and 0 where 0 is the default (off)."""
    if value is None or value is False or value == "":
        return []
    if value is True:
        return [f"--{name}"]
    if isinstance(value, (int, float)) and value == 0 and default == 0:
        return []
    if name == "optimizer_args":  # nargs: key=value pairs as separate words
        return [f"--{name}", *str(value).split()]
    return [f"--{name}", _text(value)]


def _train_part_flags(cfg: TrainConfig) -> list[str]:
    """Learning rate 0 for a part means "do not train it" here; sd-scripts says so with a flag."""
    if cfg.effective_text_encoder_lr() == 0 and not cfg.network_train_unet_only:
        return ["--network_train_unet_only"]
    if cfg.effective_unet_lr() == 0 and not cfg.network_train_text_encoder_only:
        return ["--network_train_text_encoder_only"]
    return []


def _text(value: Any) -> str:
    return repr(value) if isinstance(value, float) and not float(value).is_integer() else str(value)
