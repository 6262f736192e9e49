"""Folders tab: image, regularisation, output and logging folders, output name, metadata."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional  # noqa: F401  (annotations name it)

from trainer.params import param
from trainer.settings.choices import *  # noqa: F401,F403  (the choices and checks the declarations name)


@dataclass
class FolderSettings:
    train_data_dir: str = param(
        "", "Image folder: the PARENT of folders named <repeats>_<token> <class>, e.g. img/ containing 10_sks woman/.",
        tab="folders", label="Image folder", widget="path", accept=FOLDER)
    reg_data_dir: str = param("", "Regularisation image folder: the parent of <repeats>_<class> folders (optional).",
                              tab="folders", label="Regularisation folder", widget="path",
                              accept=FOLDER)
    conditioning_data_dir: str = param(
        "", "Masked loss: the folder of mask images, named like the training images (white = learn, black = "
        "ignore), directly in it or in sub-folders named like the image folders (optional).", tab="folders",
        label="Mask (conditioning) folder", widget="path", accept=FOLDER)
    output_dir: str = param("", "Folder where LoRA files, samples and the event log are written.",
                            tab="folders", label="Output folder", widget="path", accept=FOLDER)
    output_name: str = param("last", "File name (without extension) of the trained LoRA.",
                             tab="folders", label="Output name")
    logging_dir: str = param("", "Folder for TensorBoard logs (optional).", tab="folders", label="Logging folder",
                             widget="path", accept=FOLDER)
    training_comment: str = param("", "Free text stored in the file (ss_training_comment), e.g. the trigger word.",
                                  tab="folders", section="metadata", label="Training comment")
    metadata_title: str = param("", "Title stored in the file's model spec (default: output name).", tab="folders",
                                section="metadata", label="Metadata title")
    metadata_author: str = param("", "Author stored in the file's model spec.", tab="folders", section="metadata",
                                 label="Metadata author")
    metadata_description: str = param("", "Description stored in the file's model spec.", tab="folders",
                                      section="metadata", label="Metadata description")
    metadata_license: str = param("", "License stored in the file's model spec.", tab="folders", section="metadata",
                                  label="Metadata license")
    metadata_tags: str = param("", "Comma-separated tags stored in the file's model spec.", tab="folders",
                               section="metadata", label="Metadata tags")
