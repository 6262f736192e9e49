"""Pre-flight rules of the loss options: combinations sd-scripts warns about, and options a model ignores."""

from __future__ import annotations

from typing import Iterator

from trainer.findings import Finding
from trainer.preflight.registry import WARNING, Context, issue, rule


@rule("debiased_with_min_snr", "scale_v_pred_without_v_model")
def loss_weighting(ctx: Context) -> Iterator[Finding]:
    cfg = ctx.cfg
    if cfg.debiased_estimation_loss and cfg.min_snr_gamma > 0:
        yield issue("debiased_estimation_loss", WARNING, "debiased_with_min_snr",
                    f"Debiased estimation and Min SNR gamma ({cfg.min_snr_gamma:g}) both weight the loss by the "
                    "timestep's SNR; together they under-weight the noisy timesteps twice. Use one of them.",
                    gamma=cfg.min_snr_gamma)
    info = ctx.model_info
    v_model = cfg.v_parameterization or bool(info is not None and info.v_parameterization)
    if cfg.scale_v_pred_loss_like_noise_pred and not v_model:
        yield issue("scale_v_pred_loss_like_noise_pred", WARNING, "scale_v_pred_without_v_model",
                    "Scale v-prediction loss only changes a v-prediction model's loss; this model predicts noise, "
                    "so it does nothing. Turn it off, or switch on v-parameterization for a v model.")
