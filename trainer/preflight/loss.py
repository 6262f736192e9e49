"""Pre-flight rules of the loss options: combinations sd-scripts warns about, options a model ignores, and
where the masks of a masked loss come from."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from trainer.data.masks import has_mask, uses_masks
from trainer.findings import Finding
from trainer.preflight.registry import ERROR, WARNING, Context, issue, rule


@rule("debiased_with_min_snr", "scale_v_pred_without_v_model")
def loss_weighting(ctx: Context) -> Iterator[Finding]:
    cfg = ctx.cfg
    if cfg.debiased_estimation_loss and cfg.min_snr_gamma > 0:
        yield issue("debiased_estimation_loss", WARNING, "debiased_with_min_snr",
                    f"Debiased estimation and Min SNR gamma ({cfg.min_snr_gamma:g}) both weight the loss by the "
                    "timestep's SNR; together they under-weight the noisy timesteps twice. Use one of them.",
                    gamma=cfg.min_snr_gamma)
    if not cfg.scale_v_pred_loss_like_noise_pred or cfg.v_parameterization:
        return
    info = ctx.model_info  # detected only when the option is on
    if not (info is not None and info.v_parameterization):
        yield issue("scale_v_pred_loss_like_noise_pred", WARNING, "scale_v_pred_without_v_model",
                    "Scale v-prediction loss only changes a v-prediction model's loss; this model predicts noise, "
                    "so it does nothing. Turn it off, or switch on v-parameterization for a v model.")


@rule("masked_loss_no_source", "conditioning_dir_missing", "images_without_mask")
def loss_masks(ctx: Context) -> Iterator[Finding]:
    cfg = ctx.cfg
    if not uses_masks(cfg):
        return
    folder = cfg.conditioning_data_dir.strip()
    if cfg.masked_loss and not cfg.alpha_mask:
        if not folder:
            yield issue("conditioning_data_dir", ERROR, "masked_loss_no_source",
                        "Masked loss needs masks: choose the mask (conditioning) folder with a mask image per "
                        "training image, or use the images' alpha channel (Alpha mask).")
            return
        if not Path(folder).expanduser().is_dir():
            yield issue("conditioning_data_dir", ERROR, "conditioning_dir_missing",
                        f"The mask folder {folder} does not exist. Check the path.", path=folder)
            return
    try:
        images = [image.path for subset in ctx.scan.subsets if not subset.is_reg for image in subset.images]
    except Exception:  # noqa: BLE001 - an unreadable image folder is the folder rules' finding
        return
    missing = [path for path in images if not has_mask(path, cfg)]
    if missing:
        where = "no alpha channel" if cfg.alpha_mask else f"no mask in {folder}"
        yield issue("alpha_mask" if cfg.alpha_mask else "conditioning_data_dir", WARNING, "images_without_mask",
                    f"{len(missing)} of {len(images)} training images have {where} (e.g. {missing[0].name}); they "
                    "are learned everywhere.", count=len(missing), total=len(images), example=missing[0].name)
