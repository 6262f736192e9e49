"""Print command: the engine command is written out and runs as printed; the sd-scripts line comes from metadata."""

from __future__ import annotations

import shlex
from pathlib import Path

from lora_gui.command_line import engine_command_line, sd_scripts_command
from lora_gui.family import QUICK_PICKS
from trainer.config import TrainConfig, iter_field_meta

SD15, SDXL = QUICK_PICKS["sd15"][0], QUICK_PICKS["sdxl"][0]
HOW = {"network_module", "network_args", "network_args_if_set", "unless_default", "file", "implied", "launch", True, False}


def _options(text: str) -> dict[str, list[str]]:
    """--name value... groups of an sd-scripts line."""
    words = shlex.split(text)
    options: dict[str, list[str]] = {}
    current = None
    script = next(i for i, word in enumerate(words) if word.endswith("train_network.py"))
    for word in words[script + 1:]:
        if word.startswith("--"):
            current = word[2:]
            options[current] = []
        else:
            options[current].append(word)
    return options


def test_every_field_says_how_sd_scripts_takes_it():
    assert {meta.get("sd_scripts", True) for _f, meta in iter_field_meta()} <= HOW


def test_engine_command_writes_the_run_file_it_names(tmp_path):
    cfg = TrainConfig(pretrained_model_name_or_path=SD15, output_dir=str(tmp_path / "new" / "out"), output_name="x")
    command, run_file = engine_command_line(cfg)
    assert run_file == tmp_path / "new" / "out" / "run.json" and run_file.is_file()
    assert TrainConfig.load(run_file) == cfg
    words = shlex.split(command)
    assert words[0] == "cd" and Path(words[1], "trainer", "__main__.py").is_file()  # -m trainer is found there
    assert words[words.index("--config") + 1] == str(run_file)


def test_sd_scripts_line_uses_the_field_names(tmp_path):
    cfg = TrainConfig(pretrained_model_name_or_path=SD15, train_data_dir="/data/img", output_dir=str(tmp_path),
                      output_name="me", network_dim=16, network_alpha=8.0, learning_rate=2e-4, text_encoder_lr=0.0,
                      optimizer_args="weight_decay=0.01 betas=0.9,0.99", shuffle_caption=True,
                      sample_prompts="a cat --w 512\na dog", sample_every_n_epochs=1)
    command = sd_scripts_command(cfg)
    words = shlex.split(command.text)
    assert words[:5] == ["accelerate", "launch", "--num_cpu_threads_per_process", "1", "train_network.py"]
    options = _options(command.text)
    assert options["network_dim"] == ["16"] and options["network_alpha"] == ["8.0"]
    assert options["learning_rate"] == ["0.0002"] and options["network_module"] == ["networks.lora"]
    assert options["optimizer_args"] == ["weight_decay=0.01", "betas=0.9,0.99"]
    assert options["shuffle_caption"] == [] and "flip_aug" not in options  # store_true flags
    assert "network_train_unet_only" in options  # text-encoder learning rate 0
    assert "max_train_steps" not in options and "save_every_n_steps" not in options  # 0 = off
    assert "network_args" not in options and "conv_dim" not in options  # Standard LoRA
    assert "multires_noise_iterations" not in options and "noise_offset_type" not in options
    assert "max_token_length" not in options  # sd-scripts refuses 75, its own default
    prompts = Path(options["sample_prompts"][0])
    assert prompts.read_text(encoding="utf-8") == "a cat --w 512\na dog\n" and command.files == [prompts]
    assert command.unsupported == []


def test_sd_scripts_line_for_locon_multires_and_sdxl(tmp_path):
    cfg = TrainConfig(pretrained_model_name_or_path=SDXL, output_dir=str(tmp_path), lora_type="LoCon", conv_dim=8,
                      conv_alpha=4.0, noise_offset_type="Multires", max_token_length=225,
                      no_half_vae=True)
    command = sd_scripts_command(cfg)
    assert shlex.split(command.text)[4] == "sdxl_train_network.py"
    options = _options(command.text)
    assert options["network_args"] == ["conv_dim=8", "conv_alpha=4.0"]
    assert options["multires_noise_iterations"] == ["6"] and "noise_offset" not in options
    assert options["max_token_length"] == ["225"] and options["no_half_vae"] == []  # shown for SDXL
    assert command.unsupported == []  # the SDXL-only switches at their defaults: what sd-scripts does too
    cfg = cfg.replace(network_train_text_encoder_2=False, ema_decay=0.999)
    assert {name for name, _v in sd_scripts_command(cfg).unsupported} == {"network_train_text_encoder_2", "ema_decay"}


def test_sd_scripts_line_for_loraplus_and_the_loss_options(tmp_path):
    cfg = TrainConfig(pretrained_model_name_or_path=SDXL, output_dir=str(tmp_path), loraplus_lr_ratio=16.0,
                      loss_type="huber", huber_schedule="exponential", debiased_estimation_loss=True,
                      ip_noise_gamma=0.1, zero_terminal_snr=True)
    options = _options(sd_scripts_command(cfg).text)
    assert options["network_args"] == ["loraplus_lr_ratio=16.0"]  # the other ratios are off (0)
    assert options["loss_type"] == ["huber"] and options["huber_schedule"] == ["exponential"]
    assert options["debiased_estimation_loss"] == [] and options["zero_terminal_snr"] == []
    assert options["ip_noise_gamma"] == ["0.1"] and "v_pred_like_loss" not in options


def test_several_gpus_go_to_the_launcher_on_both_lines(tmp_path):
    from accelerate.commands.launch import launch_command_parser

    cfg = TrainConfig(pretrained_model_name_or_path=SD15, output_dir=str(tmp_path), num_processes=4, num_machines=2,
                      machine_rank=1, main_process_ip="10.0.0.1", main_process_port=29501, gpu_ids="0, 1")
    words = shlex.split(sd_scripts_command(cfg).text)
    script = words.index("train_network.py")
    launch = launch_command_parser().parse_args(words[2:script] + ["train_network.py"])
    assert (launch.multi_gpu, launch.num_processes, launch.num_machines, launch.machine_rank) == (True, 4, 2, 1)
    assert (launch.main_process_ip, launch.main_process_port, launch.gpu_ids) == ("10.0.0.1", 29501, "0,1")
    assert not any(name in _options(sd_scripts_command(cfg).text) for name in ("num_processes", "gpu_ids"))
    command, run_file = engine_command_line(cfg)  # the launcher the engine starts for Start
    words = shlex.split(command)
    assert words[words.index("-m") + 1] == "accelerate.commands.launch"
    script = words.index("trainer")
    assert words[script - 1:] == ["-m", "trainer", "--config", str(run_file)]
    launch = launch_command_parser().parse_args(words[words.index("-m") + 2:script - 1] + ["x.py"])
    assert (launch.num_processes, launch.machine_rank, launch.gpu_ids) == (4, 1, "0,1")
