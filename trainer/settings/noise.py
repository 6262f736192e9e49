"""Advanced tab, second half: noise, loss and timesteps, saving and resuming, accelerate launch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional  # noqa: F401  (annotations name it)

from trainer.params import param
from trainer.settings.choices import *  # noqa: F401,F403  (the choices and checks the declarations name)


@dataclass
class NoiseSettings:
    noise_offset_type: str = param("Original", "Kind of extra noise.", tab="advanced", section="noise", label="Noise offset type",
                                   choices=("Original", "Multires"), sd_scripts="implied")
    noise_offset: float = param(0.0, "Noise offset (0.05-0.1 helps very dark or bright images).", tab="advanced", section="noise",
                                label="Noise offset", min=0.0, max=1.0)
    multires_noise_iterations: int = param(6, "Multires noise iterations (Multires only).", tab="advanced", section="noise",
                                           label="Multires noise iterations", min=0, max=64)
    multires_noise_discount: float = param(0.3, "Multires noise discount (Multires only).", tab="advanced", section="noise",
                                           label="Multires noise discount", min=0.0, max=1.0)
    min_snr_gamma: float = param(0.0, "Min-SNR loss weighting gamma (0 = off, 5 is typical).", tab="advanced", section="noise",
                                 label="Min SNR gamma", min=0.0, max=20.0)
    prior_loss_weight: float = param(1.0, "Loss weight of regularisation images.", tab="advanced", section="noise",
                                     label="Prior loss weight", min=0.0, max=10.0)
    min_timestep: int = param(0, "Smallest diffusion timestep sampled.", tab="advanced", section="noise", label="Min timestep",
                              min=0, max=1000)
    max_timestep: int = param(1000, "Largest diffusion timestep sampled (exclusive).", tab="advanced", section="noise",
                              label="Max timestep", min=1, max=1000)
    ip_noise_gamma: float = param(0.0, "Input perturbation noise: the noisy latents get this much extra noise while the "
                                  "target stays the original noise (0 = off, about 0.1).", tab="advanced",
                                  section="noise", label="IP noise gamma", min=0.0, max=1.0)
    ip_noise_gamma_random_strength: bool = param(False, "Draw the IP noise gamma of each step between 0 and IP "
                                                 "noise gamma.", tab="advanced", section="noise",
                                                 label="IP noise gamma random strength")
    zero_terminal_snr: bool = param(False, "Rescale the noise schedule so the last timestep is pure noise (zero "
                                    "SNR), as the zero-terminal-SNR paper does; best with v-prediction.",
                                    tab="advanced", section="noise", label="Zero terminal SNR")
    # ---- loss (sd-scripts' names and formulas: trainer/training/loss_terms.py) ----
    loss_type: str = param("l2", "Loss of each latent element: l2 (MSE), l1, huber or smooth_l1 (robust to "
                           "outliers).", tab="advanced", section="loss", label="Loss type", choices=LOSS_TYPES)
    huber_schedule: str = param("snr", "How the Huber threshold c follows the timestep (huber / smooth_l1 only).",
                                tab="advanced", section="loss", label="Huber schedule", choices=HUBER_SCHEDULES)
    huber_c: float = param(0.1, "Huber threshold c (huber / smooth_l1 only).", tab="advanced", section="loss",
                           label="Huber C", min=0.0, max=1.0)
    huber_scale: float = param(1.0, "Scale of the Huber threshold (huber / smooth_l1 only).", tab="advanced",
                               section="loss", label="Huber scale", min=0.0, max=10.0)
    debiased_estimation_loss: bool = param(False, "Weight each timestep's loss by 1/sqrt(SNR) (1/(SNR+1) with "
                                           "v-prediction). Do not combine with Min SNR gamma.", tab="advanced",
                                           section="loss", label="Debiased estimation loss")
    scale_v_pred_loss_like_noise_pred: bool = param(False, "v-prediction models: scale the loss by SNR/(SNR+1) so "
                                                    "it weighs timesteps as a noise-prediction loss does.",
                                                    tab="advanced", section="loss", label="Scale v-prediction loss")
    v_pred_like_loss: float = param(0.0, "Add this share of a v-prediction-like loss: loss += loss x value x "
                                    "(SNR+1)/SNR (0 = off).", tab="advanced", section="loss", label="V pred like loss",
                                    min=0.0, max=1.0)
    masked_loss: bool = param(False, "Weight the loss of each image by its mask from the mask (conditioning) "
                              "folder: black areas are not learned. Images without a mask count everywhere.",
                              tab="advanced", section="loss", label="Masked loss")
    alpha_mask: bool = param(False, "Use each image's alpha channel as its loss mask (transparent areas are not "
                             "learned); images without alpha count everywhere.", tab="advanced", section="loss",
                             label="Alpha mask")
    save_every_n_steps: int = param(0, "Also save a LoRA every N steps (0 = off).", tab="advanced", section="saving",
                                    label="Save every N steps", min=0, max=10_000_000)
    save_state: bool = param(False, "Save optimizer, scheduler and RNG state with each save, for resuming.",
                             tab="advanced", section="saving", label="Save training state")
    resume: str = param("", "Resume from a saved state folder (<name>-state).", tab="advanced", section="saving",
                        label="Resume from saved training state", widget="path",
                        accept=FOLDER)
    # Accelerate launch (kohya_ss's names): with more than one process the engine relaunches itself
    # through `accelerate launch` (trainer/distributed.py).
    num_processes: int = param(1, "Training processes, one per GPU (over several machines: all of them). The batch "
                               "size is per process.", tab="advanced", section="accelerate", label="Number of processes",
                               min=1, max=1024, sd_scripts="launch")
    num_machines: int = param(1, "Machines taking part (each runs the same command with its own machine rank).",
                              tab="advanced", section="accelerate", label="Number of machines", min=1, max=1024,
                              sd_scripts="launch")
    gpu_ids: str = param("", "GPUs of this machine to use, e.g. 0,1 (empty: all).", tab="advanced",
                         section="accelerate", label="GPU IDs", sd_scripts="launch")
    machine_rank: int = param(0, "This machine's rank, 0 to machines - 1 (0 is the main machine, which writes the "
                              "files).", tab="advanced", section="accelerate", label="Machine rank", min=0, max=1023,
                              sd_scripts="launch")
    main_process_ip: str = param("", "Address of machine 0 (needed with several machines).", tab="advanced",
                                 section="accelerate", label="Main process IP", sd_scripts="launch")
    main_process_port: int = param(0, "Port on machine 0 the processes meet on (0: a free port on one machine, "
                                   "29500 with several).", tab="advanced", section="accelerate",
                                   label="Main process port", min=0, max=65535, sd_scripts="launch")
    num_cpu_threads_per_process: int = param(0, "CPU threads of each process (0: the cores shared out between "
                                             "the processes).", tab="advanced", section="accelerate",
                                             label="CPU threads per process", min=0, max=1024, sd_scripts="launch")
