"""LoRA network: peft injection with kohya semantics (`lora`), the kohya file format (`kohya_format`),
training metadata (`metadata`, torch-free) and sd-scripts' hashes (`hashes`).

Import the submodules directly; this package imports nothing so that `metadata` stays torch-free.
"""
