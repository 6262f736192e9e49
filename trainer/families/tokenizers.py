"""CLIP tokenizers built from the BPE files shipped with the project (no hub access).

transformers 5 silently ignores `CLIPTokenizer(vocab_file=..., merges_file=...)`, so the
tokenizer is always built with `from_pretrained` on the bundled folder.
"""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).parent / "assets"
CLIP_BPE_DIR = ASSETS / "clip_tokenizer"


def load_clip_tokenizer(pad_token: str = "<|endoftext|>", model_max_length: int = 77):
    """The standard 49,408-token CLIP tokenizer. SD1 pads with <|endoftext|>, SD2/SDXL-G with '!'."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(
        str(CLIP_BPE_DIR),
        pad_token=pad_token,
        model_max_length=model_max_length,
        local_files_only=True,
    )
