"""Pre-flight rules of the output folder and name (also run alone before anything of a run is written)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator, Optional

from trainer.config import TrainConfig
from trainer.fileio import MAX_NAME_BYTES, NameProblem, portable_name_problem
from trainer.findings import Finding
from trainer.preflight.registry import ERROR, Context, issue, rule
from trainer.resumable import SAVE_SUFFIX

# The longest file names a run makes from output_name, temporary names included (fileio.atomic_path,
# training/state.py, sampling.sample_file_name): the name must leave room for them.
DERIVED_NAMES = (".{}-step00000500.safetensors.abcd1234.tmp", ".{}-step00000500-state.abcd1234",
                 ".{}_e000002_00_4294967295.png.abcd1234.tmp")
LONGEST_DERIVED_NAME = max(DERIVED_NAMES, key=len)
# Problems after which nothing may be written for the run (not even its event file).
OUTPUT_PATH_CODES = ("output_dir_empty", "output_dir_not_folder", "output_dir_not_writable", "output_dir_invalid",
                     "output_name_invalid", "output_name_reserved", "output_name_trailing", "output_name_too_long")


def output_name_problem(name: str) -> Optional[NameProblem]:
    """Why `name` cannot be an output name on every OS (shared with the slider wizard), or None."""
    return portable_name_problem(name, longest_derived=LONGEST_DERIVED_NAME)


def output_path_issues(cfg: TrainConfig) -> list[Finding]:
    """The output folder and name errors: checked before anything of the run is written."""
    ctx = Context(cfg, cuda_available=False)
    found = [*output_folder(ctx), *output_name(ctx)]
    return [i for i in found if i.code in OUTPUT_PATH_CODES]


@rule("output_dir_empty", "output_dir_not_folder", "output_dir_not_writable", "output_dir_invalid")
def output_folder(ctx: Context) -> Iterator[Finding]:
    value = ctx.cfg.output_dir.strip()
    if not value:
        yield issue("output_dir", ERROR, "output_dir_empty",
                    "No output folder chosen. Choose the folder where the LoRA files will be saved.")
        return
    p = Path(value).expanduser()
    long_part = next((part for part in p.parts if len(part.encode("utf-8")) > MAX_NAME_BYTES), None)
    if long_part is not None:  # checked first: Path.exists() raises on such a path
        yield issue("output_dir", ERROR, "output_dir_invalid",
                    f"The output folder {value} cannot be used: the name {long_part[:40]!r}... is longer than the "
                    f"{MAX_NAME_BYTES} bytes a folder name may have. Choose a folder with shorter names.",
                    path=value, reason=f"a folder name longer than {MAX_NAME_BYTES} bytes")
        return
    if p.exists() and not p.is_dir():
        yield issue("output_dir", ERROR, "output_dir_not_folder",
                    f"The output folder {value} is a file. Choose a folder.", path=value)
        return
    existing = p if p.exists() else next((a for a in p.parents if a.exists()), None)
    if existing is not None and not existing.is_dir():
        yield issue("output_dir", ERROR, "output_dir_not_folder",
                    f"The output folder {value} cannot be made: {existing} is a file. Choose a folder.",
                    path=str(existing))
        return
    if existing is not None and not os.access(existing, os.W_OK):
        yield issue("output_dir", ERROR, "output_dir_not_writable",
                    f"Cannot write to {existing}. Choose a folder you can write to.", path=str(existing))


@rule("output_name_invalid", "output_name_reserved", "output_name_trailing", "output_name_too_long",
       "output_exists")
def output_name(ctx: Context) -> Iterator[Finding]:
    cfg = ctx.cfg
    name = cfg.output_name
    problem = output_name_problem(name)
    if problem is not None:
        yield _name_issue(name, problem)
        return
    if not cfg.output_dir.strip():
        return
    out = Path(cfg.output_dir).expanduser()
    ext = "." + cfg.save_model_as
    try:
        clashes = [out / f"{name}{ext}"] if (out / f"{name}{ext}").exists() else []
        if out.is_dir() and not cfg.resume.strip():  # a resumed run continues the files of the run it resumes
            own = re.compile(re.escape(name) + f"({SAVE_SUFFIX})" + re.escape(ext) + "$")
            clashes += sorted(p for p in out.iterdir() if own.match(p.name))
    except OSError:
        return  # an output folder that cannot be looked at: the output_folder rule says why
    if clashes:
        suggestion = _free_name(out, name, ext)
        listing = ", ".join(p.name for p in clashes[:5]) + (", ..." if len(clashes) > 5 else "")
        yield issue("output_name", ERROR, "output_exists",
                    f"{out} already holds {listing} from an earlier run, and files are never overwritten. "
                    f"Change the output name (e.g. {suggestion}) or move the old files.",
                    path=str(clashes[0]), files=[p.name for p in clashes], suggestion=suggestion)


def _name_issue(name: str, problem: NameProblem) -> Finding:
    text = f"The output name {name!r} {problem.text}."
    anything_else = "Choose another name: letters, digits, '-' and '_' work on every system."
    if problem.kind == "too_long":
        return issue("output_name", ERROR, "output_name_too_long", f"{text} Choose a shorter name.", name=name,
                     bytes=problem.params["bytes"], max_bytes=problem.params["max_bytes"],
                     example=problem.params["example"])
    if problem.kind == "reserved":
        return issue("output_name", ERROR, "output_name_reserved", f"{text} {anything_else}", name=name,
                     device=problem.params["device"])
    if problem.kind == "trailing":
        return issue("output_name", ERROR, "output_name_trailing", f"{text} {anything_else}", name=name)
    return issue("output_name", ERROR, "output_name_invalid", f"{text} {anything_else}", name=name)


def _free_name(folder: Path, name: str, ext: str) -> str:
    n = 2
    while (folder / f"{name}_{n}{ext}").exists():
        n += 1
    return f"{name}_{n}"


@rule("logging_dir_not_folder", "tensorboard_missing")
def logging_folder(ctx: Context) -> Iterator[Finding]:
    """TensorBoard logs go under logging_dir: a folder that can be made, and the tensorboard package."""
    import importlib.util

    value = ctx.cfg.logging_dir.strip()
    if not value:
        return
    p = Path(value).expanduser()
    existing = next((a for a in (p, *p.parents) if a.exists()), None)
    if existing is not None and not existing.is_dir():
        yield issue("logging_dir", ERROR, "logging_dir_not_folder",
                    f"The logging folder {value} cannot be made: {existing} is a file. Choose a folder, or leave "
                    "the field empty for no TensorBoard logs.", path=str(existing))
    elif importlib.util.find_spec("tensorboard") is None:
        yield issue("logging_dir", ERROR, "tensorboard_missing",
                    "TensorBoard logs need the tensorboard package, which is not installed. Install it "
                    "(pip install tensorboard), or leave the logging folder empty.")
