"""Pre-flight checks of a TrainConfig (torch-free: the web process runs them as the user edits).

`validate(cfg)` returns ValidationIssue(field, level, code, message, params): `field` is the config
field to highlight, `code` keys the UI's translation catalog and `params` fill its template; `message`
is the English text (what is wrong, then what to do). Errors block training; warnings do not.

Each rule is a small function registered with @rule; rules that need the dataset share one folder scan
and one step plan through the context.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
import shutil
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

from trainer.config import TrainConfig, ValidationIssue, parse_resolution
from trainer.data.scan import IMAGE_EXTENSIONS, DatasetScan, FolderScan, parse_subset_name, scan_dataset
from trainer.data.steps import StepPlan, plan_steps
from trainer.fileio import NameProblem, portable_name_problem
from trainer.prompts import read_prompts
from trainer.training.optimizer_args import RESERVED_KEYS, SYNTAX_HINT, optimizer_signature, syntax_problems

ERROR, WARNING = "error", "warning"

# Every issue code, for the UI's translation catalogs (tests check this list against the rules).
CODES = (
    "model_path_empty", "model_path_invalid", "vae_missing", "network_weights_missing", "resume_missing",
    "resume_not_folder",
    "dir_empty", "dir_missing", "dir_not_folder", "dir_holds_images", "dir_no_subsets", "dir_no_images",
    "loose_images_ignored", "folder_ignored", "subset_empty", "nested_images_ignored", "empty_caption",
    "corrupt_image", "caption_unreadable", "duplicate_image_stem", "caption_extension_no_dot",
    "caption_extension_mismatch", "reg_images_unused", "dir_unreadable", "images_skipped", "reg_dir_overlaps_train",
    "output_dir_empty", "output_dir_not_folder", "output_dir_not_writable", "output_name_invalid", "output_exists",
    "output_name_reserved", "output_name_trailing", "output_name_too_long",
    "alpha_above_rank", "conv_alpha_above_rank", "train_only_conflict", "nothing_to_train",
    "warmup_with_constant", "scheduler_needs_adafactor", "adafactor_relative_step", "warmup_ignored",
    "warmup_exceeds_total",
    "full_fp16_and_bf16", "full_fp16_needs_fp16", "full_bf16_needs_bf16", "precision_cpu",
    "xformers_without_cuda", "xformers_missing",
    "cache_latents_disabled", "timestep_range_empty", "resolution_invalid", "resolution_not_multiple_of_8",
    "bucket_steps_not_multiple_of_8", "bucket_steps_not_64", "bucket_reso_order", "max_bucket_below_resolution",
    "batch_larger_than_bucket", "sample_prompts_without_cadence", "sample_cadence_without_prompts",
    "clip_skip_ignored", "bucket_steps_not_32", "sdxl_vae_fp32", "te_cache_with_te_training",
    "te_cache_caption_changes",
    "optimizer_args_syntax", "optimizer_args_reserved_key", "optimizer_args_unknown_key", "optimizer_args_unchecked_key",
    "sample_prompt_file_missing", "sample_prompt_file_unreadable", "sample_prompt_file_empty",
    "sample_prompt_unknown_option", "sample_prompt_option_empty", "sample_prompt_not_a_number",
    "sample_prompt_out_of_range", "sample_prompt_unknown_sampler",
)
SUBSET_EXAMPLE = "10_sks woman"
MODEL_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


def validate(cfg: TrainConfig, *, cuda_available: Optional[bool] = None,
             scan: Optional[DatasetScan] = None) -> list[ValidationIssue]:
    """Every problem found in `cfg`. `cuda_available=None` detects CUDA without importing torch."""
    ctx = Context(cfg, cuda_available=cuda_available, scan=scan)
    return [finding for check in RULES for finding in check(ctx)]


def has_errors(issues: Iterable[ValidationIssue]) -> bool:
    return any(i.level == ERROR for i in issues)


@lru_cache(maxsize=1)
def detect_cuda() -> bool:
    """A cheap guess whether torch will see a CUDA (or ROCm) GPU, without importing torch."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    if Path("/proc/driver/nvidia/version").exists() or Path("/dev/kfd").exists():
        return True
    return shutil.which("nvidia-smi") is not None


class Context:
    """What the rules share: the config, CUDA availability, and the (lazily built) scan and plan."""

    def __init__(self, cfg: TrainConfig, *, cuda_available: Optional[bool] = None,
                 scan: Optional[DatasetScan] = None):
        self.cfg = cfg
        self.cuda = detect_cuda() if cuda_available is None else cuda_available
        if scan is not None:
            self.__dict__["scan"] = scan  # pre-fills the cached_property below

    @cached_property
    def scan(self) -> DatasetScan:
        return scan_dataset(self.cfg)

    @cached_property
    def family(self) -> Optional[str]:
        """The base model's family ("sd1", "sd2", "sdxl") when it can be told without loading, else None."""
        try:
            from trainer.families.detect import detect_model

            return detect_model(self.cfg.pretrained_model_name_or_path).family
        except Exception:  # a missing or broken model is reported by the model_path rule
            return None

    @cached_property
    def resolution(self) -> Optional[tuple[int, int]]:
        try:
            return parse_resolution(self.cfg.resolution)
        except ValueError:
            return None

    @cached_property
    def plan(self) -> Optional[StepPlan]:
        """The step plan, or None when the settings or folders do not allow one."""
        cfg = self.cfg
        if self.resolution is None or cfg.bucket_reso_steps < 1 or not self.scan.train.subsets:
            return None
        try:
            return plan_steps(cfg, self.scan)
        except (ValueError, ZeroDivisionError):
            return None


Rule = Callable[[Context], Iterable[ValidationIssue]]
RULES: list[Rule] = []


def rule(fn: Rule) -> Rule:
    RULES.append(fn)
    return fn


def issue(field: str, level: str, code: str, message: str, **params) -> ValidationIssue:
    return ValidationIssue(field=field, level=level, code=code, message=message, params=params)


def trains_text_encoder(cfg: TrainConfig, family: Optional[str]) -> bool:
    """Whether a text-encoder LoRA is trained: a text-encoder learning rate above 0 and, for SDXL, at
    least one of the two encoder switches on (an unknown family counts as having one encoder)."""
    if cfg.effective_text_encoder_lr() <= 0:
        return False
    if family == "sdxl":
        return cfg.network_train_text_encoder_1 or cfg.network_train_text_encoder_2
    return True


def family_issues(cfg: TrainConfig, family: Optional[str], *, cuda: bool = True) -> list[ValidationIssue]:
    """The rules that depend on the model family. The engine runs them again once a .ckpt is loaded,
    since validation cannot tell a pickled checkpoint's family."""
    if family != "sdxl":
        return []
    found = []
    if cfg.clip_skip != 1:
        found.append(issue("clip_skip", WARNING, "clip_skip_ignored",
                           f"Clip skip {cfg.clip_skip} is ignored for SDXL: SDXL always uses the penultimate "
                           "layers of both text encoders. Set clip skip to 1 to silence this.",
                           clip_skip=cfg.clip_skip))
    steps = cfg.bucket_reso_steps
    if cfg.enable_bucket and steps % 32 and not steps % 8:
        found.append(issue("bucket_reso_steps", ERROR, "bucket_steps_not_32",
                           f"Bucket resolution steps {steps} is not a multiple of 32, which the SDXL UNet needs "
                           "(sd-scripts refuses it too). Use 32 or 64.", steps=steps))
    if cuda and cfg.mixed_precision == "fp16" and not cfg.no_half_vae:
        found.append(issue("no_half_vae", WARNING, "sdxl_vae_fp32",
                           "The SDXL VAE produces NaN (black images) in fp16, so it runs in fp32 although "
                           "'No half VAE' is off. Turn 'No half VAE' on to silence this.",
                           mixed_precision=cfg.mixed_precision))
    return found


@rule
def model_family(ctx: Context) -> Iterator[ValidationIssue]:
    yield from family_issues(ctx.cfg, ctx.family, cuda=ctx.cuda)


# ---- source model ------------------------------------------------------------------------

@rule
def model_path(ctx: Context) -> Iterator[ValidationIssue]:
    field, path = "pretrained_model_name_or_path", ctx.cfg.pretrained_model_name_or_path.strip()
    if not path:
        yield issue(field, ERROR, "model_path_empty",
                    "No base model chosen. Choose a diffusers folder or a .safetensors/.ckpt file.")
        return
    problem = check_model_path(path)
    if problem:
        yield issue(field, ERROR, "model_path_invalid", problem, path=path)


def check_model_path(path: str) -> Optional[str]:
    """A message when the base model cannot be used, else None.

    Uses trainer.families.detect when it is importable (it knows the families); otherwise a
    plain file-system check.
    """
    try:
        from trainer.families.detect import ModelPathError, detect_model
    except ImportError:
        return basic_model_path_problem(path)
    try:
        detect_model(path)
    except ModelPathError as exc:
        return f"{exc.message} {exc.hint}" if exc.hint else exc.message
    except Exception as exc:  # detection must never crash the form
        return f"Cannot read the model at {path}: {exc}. Check that the file is complete."
    return None


def basic_model_path_problem(path: str) -> Optional[str]:
    p = Path(path).expanduser()
    if p.is_dir():
        if (p / "model_index.json").is_file():
            return None
        return (f"{p} is a folder without model_index.json. Choose a diffusers model folder, "
                "or a .safetensors/.ckpt file.")
    if p.is_file():
        if p.suffix.lower() in MODEL_EXTENSIONS:
            return None
        return f"{p.name} is not a model file. Choose a .safetensors or .ckpt file, or a diffusers folder."
    return f"Model not found: {path}. Check the path; it must be a folder or file on this computer."


@rule
def optional_paths(ctx: Context) -> Iterator[ValidationIssue]:
    cfg = ctx.cfg
    for field, label, code in (("vae", "VAE", "vae_missing"),
                               ("network_weights", "Network weights file", "network_weights_missing"),
                               ("resume", "Saved training state", "resume_missing")):
        value = getattr(cfg, field).strip()
        if value and not Path(value).expanduser().exists():
            yield issue(field, ERROR, code, f"{label} not found: {value}. Check the path, or clear the field.",
                        path=value)
    resume = cfg.resume.strip()
    if resume and Path(resume).expanduser().is_file():
        yield issue("resume", ERROR, "resume_not_folder",
                    f"Saved training state must be a folder (<name>-state), but {resume} is a file.", path=resume)


# ---- image folders ----------------------------------------------------------------------

@rule
def train_folder(ctx: Context) -> Iterator[ValidationIssue]:
    yield from folder_issues("train_data_dir", ctx.scan.train, required=True)


@rule
def reg_folder(ctx: Context) -> Iterator[ValidationIssue]:
    if ctx.scan.reg is not None:
        yield from folder_issues("reg_data_dir", ctx.scan.reg, required=False)


@rule
def reg_folder_overlap(ctx: Context) -> Iterator[ValidationIssue]:
    """A regularisation folder that is, holds or lies in the image folder trains images as their own class."""
    train_text, reg_text = ctx.cfg.train_data_dir.strip(), ctx.cfg.reg_data_dir.strip()
    if not train_text or not reg_text:
        return
    train, reg = Path(train_text).expanduser().resolve(), Path(reg_text).expanduser().resolve()
    if reg == train:
        relation = "is the image folder"
    elif train in reg.parents:
        relation = f"is inside the image folder {train}"
    elif reg in train.parents:
        relation = f"contains the image folder {train}"
    else:
        return
    yield issue("reg_data_dir", ERROR, "reg_dir_overlaps_train",
                f"The regularisation folder {reg_text} {relation}, so training images would also count as "
                "regularisation images of their own class (doubling the steps and undoing the regularisation). "
                "Put the regularisation images in a separate folder outside the image folder, or clear this field.",
                path=reg_text, train_path=train_text)


def folder_issues(field: str, scan: FolderScan, *, required: bool) -> Iterator[ValidationIssue]:
    what = "regularisation folder" if scan.is_reg else "image folder"
    example = "1_woman" if scan.is_reg else SUBSET_EXAMPLE
    pattern = "<repeats>_<class>" if scan.is_reg else "<repeats>_<token> <class>"
    path = str(scan.root)
    if not scan.given:
        if required:
            yield issue(field, ERROR, "dir_empty",
                        f"No {what} chosen. Choose the folder that contains folders named {pattern}, "
                        f"e.g. the parent of {example}.")
        return
    if not scan.exists:
        yield issue(field, ERROR, "dir_missing", f"The {what} {path} does not exist. Check the path.", path=path)
        return
    yield from _unreadable_issues(field, scan)
    if scan.read_error:
        return
    if not scan.is_dir:
        yield issue(field, ERROR, "dir_not_folder",
                    f"{path} is a file, not a folder. Choose the folder that contains the {pattern} folders.",
                    path=path)
        return
    if not scan.subsets:
        if not scan.unreadable_subfolders:
            yield from _no_subsets(field, scan, what, pattern, example)
        return
    if scan.loose_images:
        yield issue(field, WARNING, "loose_images_ignored",
                    f"{len(scan.loose_images)} image(s) directly in {path} are not used: only images inside "
                    f"the {pattern} folders are. Move them into such a folder to train on them.",
                    path=path, count=len(scan.loose_images))
    for ignored in scan.ignored:
        name = ignored.path.name
        if ignored.reason == "zero_repeats":
            todo = f"rename it to start with 1_ or more (e.g. 1_{name.split('_', 1)[-1]}) to use it"
        else:
            todo = f"rename it to <repeats>_{name} (e.g. 10_{name}) to use it"
        yield issue(field, WARNING, "folder_ignored", f"The folder {name} in {path} is not used: {ignored.message}; "
                    f"{todo}.", path=str(ignored.path), folder=name, reason=ignored.reason)
    for subset in scan.subsets:
        yield from _subset_issues(field, subset)
    if not scan.image_count and not scan.corrupt:
        level = ERROR if required else WARNING
        yield issue(field, level, "dir_no_images",
                    f"The {pattern} folders in {path} hold no images ({' '.join(IMAGE_EXTENSIONS)}). "
                    "Put the images inside those folders.", path=path)
    yield from _file_issues(field, scan)


def _file_issues(field: str, scan: FolderScan) -> Iterator[ValidationIssue]:
    """Damaged files, images that share a caption name, and files that are not trained on."""
    for bad in scan.corrupt:
        if bad.kind == "caption":
            yield issue(field, ERROR, "caption_unreadable",
                        f"The caption file {bad.path} is {bad.reason}. Fix or remove it before training.",
                        path=str(bad.path), reason=bad.reason)
        else:
            yield issue(field, ERROR, "corrupt_image",
                        f"The image {bad.path} cannot be read: {bad.reason}. Replace or remove it; training does "
                        "not skip damaged images because that would change the step count.",
                        path=str(bad.path), reason=bad.reason)
    for dup in scan.duplicate_stems:
        yield issue(field, WARNING, "duplicate_image_stem",
                    f"{dup} has the same name as another image in its folder ({dup.stem}.*), so both use the same "
                    "caption file. Rename one of them.", path=str(dup), stem=dup.stem)
    yield from _skipped_issues(field, scan)


def _unreadable_issues(field: str, scan: FolderScan) -> Iterator[ValidationIssue]:
    for folder, why in scan.unreadable_folders():
        yield issue(field, ERROR, "dir_unreadable",
                    f"The folder {folder} cannot be read ({why}). Give your user account read access to it "
                    f"(e.g. chmod u+rx on it), or choose another folder.", path=str(folder), reason=why)


def _skipped_issues(field: str, scan: FolderScan) -> Iterator[ValidationIssue]:
    if not scan.skipped:
        return
    names = [f"{k.path.name} ({k.message})" for k in scan.skipped[:5]]
    more = f" and {len(scan.skipped) - 5} more" if len(scan.skipped) > 5 else ""
    yield issue(field, WARNING, "images_skipped",
                f"{len(scan.skipped)} file(s) in {scan.root} are not trained on: {'; '.join(names)}{more}.",
                path=str(scan.root), count=len(scan.skipped), files=[str(k.path) for k in scan.skipped])


def _no_subsets(field: str, scan: FolderScan, what: str, pattern: str, example: str) -> Iterator[ValidationIssue]:
    path, root = str(scan.root), scan.root
    parent = str(root.resolve().parent)
    if scan.loose_images:
        count = len(scan.loose_images)
        if parse_subset_name(root.name):
            todo = f"Choose {parent}, the folder above, as the {what}."
        else:
            todo = (f"Choose {parent}, the folder above, as the {what}, after renaming this folder to "
                    f"{pattern}, e.g. {1 if scan.is_reg else 10}_{root.name}.")
        yield issue(field, ERROR, "dir_holds_images",
                    f"{path} holds {count} image(s) directly, but the {what} must be the PARENT of folders named "
                    f"{pattern}. {todo}", path=path, parent=parent, count=count, pattern=pattern)
        return
    found = scan.subfolder_names
    listing = f"found: {', '.join(found[:10])}{', ...' if len(found) > 10 else ''}" if found else "it has no subfolders"
    yield issue(field, ERROR, "dir_no_subsets",
                f"{path} has no folder named {pattern} ({listing}). Put the images in a folder named like "
                f"{example} inside it (the number is how often each image repeats per epoch).",
                path=path, folders=found, pattern=pattern)


def _subset_issues(field: str, subset) -> Iterator[ValidationIssue]:
    nested = [p.name for p in subset.nested_image_folders]
    if nested:
        yield issue(field, WARNING, "nested_images_ignored",
                    f"Images in subfolders of {subset.name} ({', '.join(nested)}) are not used. Move them up into "
                    f"{subset.name}, or into their own <repeats>_<name> folder.",
                    folder=subset.name, subfolders=nested)
    if not subset.images:
        yield issue(field, WARNING, "subset_empty", f"The folder {subset.name} holds no images; it adds nothing.",
                    folder=subset.name, path=str(subset.folder))
        return
    uncaptioned = subset.image_count - subset.captioned_count
    if not subset.class_tokens and uncaptioned:
        yield issue(field, WARNING, "empty_caption",
                    f"{uncaptioned} image(s) in {subset.name} have no caption file and the folder name has no text "
                    "after the repeats, so they train with an empty caption. Add caption files, or rename the "
                    f"folder to {subset.repeats}_<token> <class>.", folder=subset.name, count=uncaptioned)


@rule
def caption_extension(ctx: Context) -> Iterator[ValidationIssue]:
    field, ext = "caption_extension", ctx.cfg.caption_extension
    if ext and not ext.startswith("."):
        yield issue(field, WARNING, "caption_extension_no_dot",
                    f"The caption extension {ext!r} has no leading dot, so captions are looked for as "
                    f"'<name>{ext}'. Set it to '.{ext}'.", extension=ext)
    counts = _caption_counts(ctx.scan)
    if counts.get(ext, 0) or not ctx.scan.subsets:
        return
    others = sorted(((n, e) for e, n in counts.items() if e != ext and n), reverse=True)
    if others:
        count, other = others[0]
        yield issue(field, WARNING, "caption_extension_mismatch",
                    f"No caption file ends with {ext or '(empty)'}, but {count} image(s) have a {other} caption file. "
                    f"Set the caption extension to {other}; otherwise those captions are ignored and the folder "
                    "names are used as captions.", extension=ext, found_extension=other, count=count)


def _caption_counts(scan: DatasetScan) -> dict[str, int]:
    total: dict[str, int] = {}
    for folder in (scan.train, scan.reg):
        for ext, n in (folder.caption_file_counts if folder else {}).items():
            total[ext] = total.get(ext, 0) + n
    return total


@rule
def reg_balance(ctx: Context) -> Iterator[ValidationIssue]:
    plan = ctx.plan
    if plan is None or not plan.num_reg_images or plan.num_reg_images_used >= plan.num_reg_images:
        return
    yield issue("reg_data_dir", WARNING, "reg_images_unused",
                f"Only {plan.num_reg_images_used} of the {plan.num_reg_images} regularisation images are used: "
                f"regularisation samples are balanced to the {plan.num_train_images} training samples "
                "(images x repeats) per epoch.", used=plan.num_reg_images_used, found=plan.num_reg_images,
                train_samples=plan.num_train_images)


# ---- output -----------------------------------------------------------------------------

# The longest file names a run makes from output_name, temporary names included (fileio.atomic_path,
# training/state.py, sampling.sample_file_name): the name must leave room for them.
DERIVED_NAMES = (".{}-step00000500.safetensors.abcd1234.tmp", ".{}-step00000500-state.abcd1234",
                 ".{}_e000002_00_4294967295.png.abcd1234.tmp")
LONGEST_DERIVED_NAME = max(DERIVED_NAMES, key=len)
# Problems after which nothing may be written for the run (not even its event file).
OUTPUT_PATH_CODES = ("output_dir_empty", "output_dir_not_folder", "output_dir_not_writable", "output_name_invalid",
                     "output_name_reserved", "output_name_trailing", "output_name_too_long")


def output_name_problem(name: str) -> Optional[NameProblem]:
    """Why `name` cannot be an output name on every OS (shared with the slider wizard), or None."""
    return portable_name_problem(name, longest_derived=LONGEST_DERIVED_NAME)


def output_path_issues(cfg: TrainConfig) -> list[ValidationIssue]:
    """The output folder and name errors: checked before anything of the run is written."""
    ctx = Context(cfg, cuda_available=False)
    found = [*output_folder(ctx), *output_name(ctx)]
    return [i for i in found if i.code in OUTPUT_PATH_CODES]


@rule
def output_folder(ctx: Context) -> Iterator[ValidationIssue]:
    value = ctx.cfg.output_dir.strip()
    if not value:
        yield issue("output_dir", ERROR, "output_dir_empty",
                    "No output folder chosen. Choose the folder where the LoRA files will be saved.")
        return
    p = Path(value).expanduser()
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


@rule
def output_name(ctx: Context) -> Iterator[ValidationIssue]:
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
    clashes = [out / f"{name}{ext}"] if (out / f"{name}{ext}").exists() else []
    if out.is_dir():
        own = re.compile(re.escape(name) + r"(-\d{6}|-step\d{8}|-stopped)" + re.escape(ext) + "$")
        clashes += sorted(p for p in out.iterdir() if own.match(p.name))
    if clashes:
        suggestion = _free_name(out, name, ext)
        listing = ", ".join(p.name for p in clashes[:5]) + (", ..." if len(clashes) > 5 else "")
        yield issue("output_name", ERROR, "output_exists",
                    f"{out} already holds {listing} from an earlier run, and files are never overwritten. "
                    f"Change the output name (e.g. {suggestion}) or move the old files.",
                    path=str(clashes[0]), files=[p.name for p in clashes], suggestion=suggestion)


def _name_issue(name: str, problem: NameProblem) -> ValidationIssue:
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


# ---- network, optimizer, scheduler --------------------------------------------------------

@rule
def alpha_vs_rank(ctx: Context) -> Iterator[ValidationIssue]:
    cfg = ctx.cfg
    if cfg.network_alpha > cfg.network_dim:
        yield issue("network_alpha", WARNING, "alpha_above_rank",
                    f"Network alpha {cfg.network_alpha:g} is above the rank {cfg.network_dim}: updates are scaled "
                    f"by alpha/rank = {cfg.network_alpha / cfg.network_dim:.3g}, which often makes training unstable. "
                    "Use an alpha no larger than the rank (1 or rank/2 are common).",
                    alpha=cfg.network_alpha, rank=cfg.network_dim)
    if cfg.uses_conv_lora() and cfg.conv_alpha > cfg.conv_dim:
        yield issue("conv_alpha", WARNING, "conv_alpha_above_rank",
                    f"Convolution alpha {cfg.conv_alpha:g} is above the convolution rank {cfg.conv_dim}: updates "
                    f"are scaled by {cfg.conv_alpha / cfg.conv_dim:.3g}. Use a convolution alpha no larger than "
                    "its rank.", alpha=cfg.conv_alpha, rank=cfg.conv_dim)


@rule
def what_is_trained(ctx: Context) -> Iterator[ValidationIssue]:
    cfg = ctx.cfg
    if cfg.network_train_unet_only and cfg.network_train_text_encoder_only:
        yield issue("network_train_unet_only", ERROR, "train_only_conflict",
                    "'Train UNet only' and 'Train text encoder only' are both on, so nothing would be trained. "
                    "Turn one of them off.")
        return
    if cfg.effective_unet_lr() == 0 and not trains_text_encoder(cfg, ctx.family):
        yield issue("unet_lr", ERROR, "nothing_to_train",
                    "Both the UNet and the text-encoder learning rates are 0, so nothing would be trained. "
                    "Set a learning rate above 0 for at least one of them.")


@rule
def optimizer_arguments(ctx: Context) -> Iterator[ValidationIssue]:
    """key=value syntax, and keys the optimizer's constructor does not name (types and values: the engine)."""
    cfg, field = ctx.cfg, "optimizer_args"
    problems = syntax_problems(cfg.optimizer_args)
    for item, message in problems:
        yield issue(field, ERROR, "optimizer_args_syntax", f"Optimizer arguments: {message}. {SYNTAX_HINT}.",
                    item=item)
    if problems:
        return
    keys = [item.partition("=")[0] for item in cfg.optimizer_args.split()]
    for key in (k for k in keys if k in RESERVED_KEYS):
        yield issue(field, ERROR, "optimizer_args_reserved_key",
                    f"Optimizer arguments: {key} is set by the learning-rate fields, not here. Remove {key}=... "
                    "and set the learning rate (and the UNet / text-encoder learning rates) instead.", key=key)
    signature = optimizer_signature(cfg.optimizer_type)
    for key in (k for k in keys if signature and k not in signature.keys and k not in RESERVED_KEYS):
        close = difflib.get_close_matches(key, signature.keys, n=1)
        guess = f" Did you mean {close[0]}?" if close else ""
        names = ", ".join(signature.keys)
        if signature.takes_any:
            yield issue(field, WARNING, "optimizer_args_unchecked_key",
                        f"Optimizer arguments: {key} is not one of the arguments {cfg.optimizer_type} names ({names}); "
                        f"it accepts other names without checking them, so a misspelt one is ignored.{guess}",
                        key=key, optimizer=cfg.optimizer_type, keys=names)
        else:
            yield issue(field, ERROR, "optimizer_args_unknown_key",
                        f"Optimizer arguments: {cfg.optimizer_type} has no argument {key}.{guess} Its arguments are: "
                        f"{names}.", key=key, optimizer=cfg.optimizer_type, keys=names)


def _optimizer_flag(args: str, key: str) -> Optional[bool]:
    """The boolean value of `key=...` in the optimizer arguments, None when absent."""
    m = re.search(rf"(?:^|[\s,]){re.escape(key)}\s*=\s*(\S+)", args)
    if not m:
        return None
    return m.group(1).strip(",").lower() in ("true", "1", "yes")


@rule
def scheduler_and_warmup(ctx: Context) -> Iterator[ValidationIssue]:
    cfg = ctx.cfg
    warmup = cfg.lr_warmup_steps
    if cfg.lr_scheduler == "constant" and warmup > 0:
        yield issue("lr_warmup_steps", ERROR, "warmup_with_constant",
                    "The constant scheduler has no warmup. Choose constant_with_warmup, or set LR warmup steps to 0.",
                    warmup=warmup)
    adafactor = cfg.optimizer_type == "Adafactor"
    if cfg.lr_scheduler == "adafactor" and not adafactor:
        yield issue("lr_scheduler", ERROR, "scheduler_needs_adafactor",
                    f"The adafactor scheduler works only with the Adafactor optimizer, not {cfg.optimizer_type}. "
                    "Choose another scheduler, or the Adafactor optimizer.", optimizer=cfg.optimizer_type)
    if adafactor and _optimizer_flag(cfg.optimizer_args, "relative_step") and cfg.lr_scheduler != "adafactor":
        yield issue("lr_scheduler", ERROR, "adafactor_relative_step",
                    "Adafactor with relative_step=True chooses its own step size, so it needs the adafactor "
                    f"scheduler, not {cfg.lr_scheduler}. Choose the adafactor scheduler, or remove relative_step=True.",
                    scheduler=cfg.lr_scheduler)
    if cfg.lr_scheduler == "adafactor" and adafactor and warmup > 0:
        yield issue("lr_warmup_steps", WARNING, "warmup_ignored",
                    "The adafactor scheduler ignores LR warmup steps. Set them to 0, or use relative_step with "
                    "warmup_init=True in the optimizer arguments.", warmup=warmup)
    plan = ctx.plan
    if plan is not None and plan.total_steps and warmup > 0:
        steps = int(warmup * plan.total_steps) if warmup < 1 else int(warmup)
        if steps >= plan.total_steps:
            yield issue("lr_warmup_steps", WARNING, "warmup_exceeds_total",
                        f"The warmup ({steps} steps) is not shorter than the whole run ({plan.total_steps} steps), "
                        "so the learning rate never reaches its set value. Lower the warmup.",
                        warmup_steps=steps, total_steps=plan.total_steps)


# ---- precision and hardware ---------------------------------------------------------------

@rule
def precision(ctx: Context) -> Iterator[ValidationIssue]:
    cfg = ctx.cfg
    if cfg.full_fp16 and cfg.full_bf16:
        yield issue("full_fp16", ERROR, "full_fp16_and_bf16",
                    "Full fp16 and full bf16 training are both on. Turn one of them off.")
    else:
        if cfg.full_fp16 and cfg.mixed_precision != "fp16":
            yield issue("full_fp16", ERROR, "full_fp16_needs_fp16",
                        f"Full fp16 training needs mixed precision fp16 (it is {cfg.mixed_precision}). "
                        "Set mixed precision to fp16, or turn full fp16 off.", mixed_precision=cfg.mixed_precision)
        if cfg.full_bf16 and cfg.mixed_precision != "bf16":
            yield issue("full_bf16", ERROR, "full_bf16_needs_bf16",
                        f"Full bf16 training needs mixed precision bf16 (it is {cfg.mixed_precision}). "
                        "Set mixed precision to bf16, or turn full bf16 off.", mixed_precision=cfg.mixed_precision)
    if cfg.mixed_precision != "no" and not ctx.cuda:
        yield issue("mixed_precision", WARNING, "precision_cpu",
                    f"Mixed precision {cfg.mixed_precision} needs a CUDA GPU, and none was found: training runs in "
                    "fp32 on the CPU. Set mixed precision to 'no' to silence this.", mixed_precision=cfg.mixed_precision)


@rule
def attention(ctx: Context) -> Iterator[ValidationIssue]:
    if not ctx.cfg.xformers:
        return
    if not ctx.cuda:
        yield issue("xformers", ERROR, "xformers_without_cuda",
                    "xformers attention needs a CUDA GPU, and none was found. Turn xformers off "
                    "(SDPA attention works everywhere).")
    elif importlib.util.find_spec("xformers") is None:
        yield issue("xformers", ERROR, "xformers_missing",
                    "xformers attention is on, but the xformers package is not installed. Install it, or turn "
                    "xformers off (SDPA attention works without it).")


# ---- data settings ------------------------------------------------------------------------

@rule
def latent_caching(ctx: Context) -> Iterator[ValidationIssue]:
    cfg = ctx.cfg
    augs = [label for name, label in (("color_aug", "color augmentation"), ("random_crop", "random crop"))
            if getattr(cfg, name)]
    if (cfg.cache_latents or cfg.cache_latents_to_disk) and augs:
        yield issue("cache_latents", WARNING, "cache_latents_disabled",
                    f"Latents will not be cached because {' and '.join(augs)} change(s) the image every epoch; "
                    "the VAE encodes every batch instead (slower). Turn the augmentation off to use the cache.",
                    augmentations=augs)


@rule
def text_encoder_cache(ctx: Context) -> Iterator[ValidationIssue]:
    cfg = ctx.cfg
    if not (cfg.cache_text_encoder_outputs or cfg.cache_text_encoder_outputs_to_disk):
        return
    field = "cache_text_encoder_outputs"
    if trains_text_encoder(cfg, ctx.family):
        yield issue(field, ERROR, "te_cache_with_te_training",
                    "Text-encoder outputs cannot be cached while the text encoder is trained: its outputs "
                    "change every step. Turn on 'Train UNet only' (or set the text-encoder learning rate to 0), "
                    "or turn caching off.")
    changes = [label for on, label in ((cfg.shuffle_caption, "shuffle caption"),
                                       (cfg.caption_dropout_rate > 0, "caption dropout"),
                                       (cfg.caption_dropout_every_n_epochs > 0, "dropout caption every n epochs"))
               if on]
    if changes:
        yield issue(field, ERROR, "te_cache_caption_changes",
                    f"Text-encoder outputs cannot be cached with {' and '.join(changes)}: the captions change "
                    "during training, so each image's outputs are not fixed. Turn those off, or turn caching off.",
                    settings=changes)


@rule
def timesteps(ctx: Context) -> Iterator[ValidationIssue]:
    cfg = ctx.cfg
    if cfg.max_timestep <= cfg.min_timestep:
        yield issue("max_timestep", ERROR, "timestep_range_empty",
                    f"Max timestep ({cfg.max_timestep}) must be above min timestep ({cfg.min_timestep}). "
                    "The defaults are 0 and 1000.", min_timestep=cfg.min_timestep, max_timestep=cfg.max_timestep)


@rule
def resolution_and_buckets(ctx: Context) -> Iterator[ValidationIssue]:
    cfg = ctx.cfg
    try:
        width, height = parse_resolution(cfg.resolution)
    except ValueError as exc:
        yield issue("resolution", ERROR, "resolution_invalid",
                    f"The resolution {cfg.resolution!r} is not valid ({exc}). Write one size such as 512, or "
                    "width,height such as 512,768.", value=cfg.resolution)
        return
    if not cfg.enable_bucket:
        if width % 8 or height % 8:
            yield issue("resolution", ERROR, "resolution_not_multiple_of_8",
                        f"Without buckets every image is trained at {width}x{height}, which must be a multiple of 8 "
                        "on both sides. Use e.g. 512 or 512,768.", width=width, height=height)
        return
    steps = cfg.bucket_reso_steps
    if steps % 8:
        yield issue("bucket_reso_steps", ERROR, "bucket_steps_not_multiple_of_8",
                    f"Bucket resolution steps {steps} is not a multiple of 8, but the VAE needs sides that are. "
                    "Use 64 (or 32, 16, 8).", steps=steps)
    elif steps % 64 and ctx.family != "sdxl":  # SDXL: multiples of 32 (see family_issues)
        yield issue("bucket_reso_steps", WARNING, "bucket_steps_not_64",
                    f"Bucket resolution steps {steps} is not a multiple of 64. SD 1.x/2.x work best with sides that "
                    "are multiples of 64 (sd-scripts requires it); 64 is the usual value.", steps=steps)
    if cfg.bucket_no_upscale:
        return
    if cfg.min_bucket_reso > cfg.max_bucket_reso:
        yield issue("min_bucket_reso", ERROR, "bucket_reso_order",
                    f"Minimum bucket resolution {cfg.min_bucket_reso} is above the maximum {cfg.max_bucket_reso}. "
                    "Swap or correct them.", min_reso=cfg.min_bucket_reso, max_reso=cfg.max_bucket_reso)
    elif cfg.max_bucket_reso < max(width, height):
        yield issue("max_bucket_reso", ERROR, "max_bucket_below_resolution",
                    f"Maximum bucket resolution {cfg.max_bucket_reso} is below the training resolution "
                    f"{width}x{height}. Set it to at least {max(width, height)}.",
                    max_reso=cfg.max_bucket_reso, resolution=max(width, height))


@rule
def batch_vs_buckets(ctx: Context) -> Iterator[ValidationIssue]:
    plan, batch = ctx.plan, ctx.cfg.train_batch_size
    small = [row for row in (plan.buckets if plan else []) if row.count < batch]
    if not small:
        return
    names = ", ".join(f"{r.resolution[0]}x{r.resolution[1]} ({r.count})" for r in small)
    yield issue("train_batch_size", WARNING, "batch_larger_than_bucket",
                f"The batch size {batch} is larger than the number of images (x repeats) in bucket(s) {names}; "
                "a batch never mixes buckets, so those batches are smaller. Lower the batch size, or add images "
                "of those shapes.", batch_size=batch,
                buckets=[{"width": r.resolution[0], "height": r.resolution[1], "count": r.count} for r in small])


# ---- samples ------------------------------------------------------------------------------

@rule
def sample_cadence(ctx: Context) -> Iterator[ValidationIssue]:
    cfg = ctx.cfg
    has_prompts = bool(cfg.sample_prompts.strip())
    has_cadence = cfg.sample_every_n_steps > 0 or cfg.sample_every_n_epochs > 0 or cfg.sample_at_first
    if has_prompts and not has_cadence:
        yield issue("sample_every_n_epochs", WARNING, "sample_prompts_without_cadence",
                    "Sample prompts are set, but no samples will be made. Set 'Sample every n epochs' or "
                    "'Sample every n steps' (or turn on 'Sample before training').")
    elif has_cadence and not has_prompts:
        yield issue("sample_prompts", WARNING, "sample_cadence_without_prompts",
                    "Sampling is on, but there are no sample prompts, so no samples will be made. "
                    "Write one prompt per line.")


@rule
def sample_prompt_lines(ctx: Context) -> Iterator[ValidationIssue]:
    """Every problem of the sample prompts (or their file), with the line and the option, before training:
    the sampler itself falls back to defaults mid-run (as sd-scripts does)."""
    if not ctx.cfg.sample_prompts.strip():
        return
    for found in read_prompts(ctx.cfg.sample_prompts).problems:
        code = found.code  # a sample_prompt_* code of CODES, set in trainer.prompts
        yield issue("sample_prompts", found.level, code, found.message, **found.params)
