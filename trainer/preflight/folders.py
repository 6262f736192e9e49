"""Pre-flight rules of the image and regularisation folders: layout, files, captions, balance."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from trainer.data.scan import IMAGE_EXTENSIONS, DatasetScan, FolderScan, parse_subset_name
from trainer.findings import Finding
from trainer.preflight.registry import ERROR, WARNING, Context, issue, rule

SUBSET_EXAMPLE = "10_sks woman"
# What folder_issues may report about either folder.
FOLDER_CODES = ("dir_empty", "dir_missing", "dir_unreadable", "dir_not_folder", "dir_holds_images", "dir_no_subsets",
                "loose_images_ignored", "folder_ignored", "nested_images_ignored", "subset_empty", "empty_caption",
                "dir_no_images", "caption_unreadable", "corrupt_image", "duplicate_image_stem", "images_skipped")


@rule(*FOLDER_CODES)
def train_folder(ctx: Context) -> Iterator[Finding]:
    yield from folder_issues("train_data_dir", ctx.scan.train, required=True)


@rule(*FOLDER_CODES)
def reg_folder(ctx: Context) -> Iterator[Finding]:
    if ctx.scan.reg is not None:
        yield from folder_issues("reg_data_dir", ctx.scan.reg, required=False)


@rule("reg_dir_overlaps_train")
def reg_folder_overlap(ctx: Context) -> Iterator[Finding]:
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


def folder_issues(field: str, scan: FolderScan, *, required: bool) -> Iterator[Finding]:
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


def _file_issues(field: str, scan: FolderScan) -> Iterator[Finding]:
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


def _unreadable_issues(field: str, scan: FolderScan) -> Iterator[Finding]:
    for folder, why in scan.unreadable_folders():
        yield issue(field, ERROR, "dir_unreadable",
                    f"The folder {folder} cannot be read ({why}). Give your user account read access to it "
                    f"(e.g. chmod u+rx on it), or choose another folder.", path=str(folder), reason=why)


def _skipped_issues(field: str, scan: FolderScan) -> Iterator[Finding]:
    if not scan.skipped:
        return
    names = [f"{k.path.name} ({k.message})" for k in scan.skipped[:5]]
    more = f" and {len(scan.skipped) - 5} more" if len(scan.skipped) > 5 else ""
    yield issue(field, WARNING, "images_skipped",
                f"{len(scan.skipped)} file(s) in {scan.root} are not trained on: {'; '.join(names)}{more}.",
                path=str(scan.root), count=len(scan.skipped), files=[str(k.path) for k in scan.skipped])


def _no_subsets(field: str, scan: FolderScan, what: str, pattern: str, example: str) -> Iterator[Finding]:
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


def _subset_issues(field: str, subset) -> Iterator[Finding]:
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


@rule("caption_extension_no_dot", "caption_extension_mismatch")
def caption_extension(ctx: Context) -> Iterator[Finding]:
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


@rule("reg_images_unused")
def reg_balance(ctx: Context) -> Iterator[Finding]:
    plan = ctx.plan
    if plan is None or not plan.num_reg_images or plan.num_reg_images_used >= plan.num_reg_images:
        return
    yield issue("reg_data_dir", WARNING, "reg_images_unused",
                f"Only {plan.num_reg_images_used} of the {plan.num_reg_images} regularisation images are used: "
                f"regularisation samples are balanced to the {plan.num_train_images} training samples "
                "(images x repeats) per epoch.", used=plan.num_reg_images_used, found=plan.num_reg_images,
                train_samples=plan.num_train_images)
