"""Datasets: folder scanning, buckets, step plan and captions (torch-free), and the torch dataset.

Importing this package does not import torch; `trainer.data.dataset` and `trainer.data.images` do.
"""

from trainer.data.buckets import BucketRules, assign_bucket, make_bucket_resolutions
from trainer.data.captions import CaptionOptions, process_caption
from trainer.data.scan import DatasetError, DatasetScan, scan_dataset
from trainer.data.steps import StepPlan, epoch_batches, plan_steps

__all__ = [
    "BucketRules", "assign_bucket", "make_bucket_resolutions",
    "CaptionOptions", "process_caption",
    "DatasetError", "DatasetScan", "scan_dataset",
    "StepPlan", "epoch_batches", "plan_steps",
]
