"""CLIP tokenizers: a diffusers folder's own (`tokenizer/`, `tokenizer_2/`), else the BPE files shipped here.

A diffusers folder may carry a custom or extended tokenizer, and its text encoder's embedding is
sized for that tokenizer, so the folder's tokenizer is used whenever it has one (as diffusers does).
Single files carry no tokenizer: they get the bundled 49,408-token CLIP tokenizer.

transformers 5 silently ignores `CLIPTokenizer(vocab_file=..., merges_file=...)`, so tokenizers are
always built with `from_pretrained` on a folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainer.families.model_info import ModelPathError

ASSETS = Path(__file__).parent / "assets"
CLIP_BPE_DIR = ASSETS / "clip_tokenizer"
# Either file makes a folder a tokenizer folder (save_pretrained in transformers 5 writes only tokenizer.json).
TOKENIZER_FILES = ("tokenizer.json", "vocab.json")
CLIP_MAX_LENGTH = 77


def load_clip_tokenizer(pad_token: str = "<|endoftext|>", model_max_length: int = CLIP_MAX_LENGTH):
    """The standard 49,408-token CLIP tokenizer. SD1 pads with <|endoftext|>, SD2/SDXL-G with '!'."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(
        str(CLIP_BPE_DIR),
        pad_token=pad_token,
        model_max_length=model_max_length,
        local_files_only=True,
    )


def has_tokenizer(folder: Path) -> bool:
    return any((folder / name).is_file() for name in TOKENIZER_FILES)


def load_model_tokenizer(model_path: str, subfolder: str, text_encoder: Any, *, pad_token: str,
                         from_folder: bool) -> Any:
    """The tokenizer for `text_encoder`: `<model_path>/<subfolder>` when `from_folder` and it holds one,
    else the bundled CLIP tokenizer padded with `pad_token`.

    Raises ModelPathError, naming the model, when the folder's tokenizer cannot be read or produces
    ids that the text encoder's embedding does not have (which would fail mid-run as an IndexError).
    """
    folder = Path(model_path).expanduser() / subfolder
    if from_folder and has_tokenizer(folder):
        tokenizer = _read_folder_tokenizer(folder, model_path, pad_token=pad_token)
        source = f"the tokenizer in {folder}"
    else:
        tokenizer = load_clip_tokenizer(pad_token=pad_token)
        source = "the bundled CLIP tokenizer"
    _fit_length_to_encoder(tokenizer, text_encoder)
    check_tokenizer_fits(tokenizer, text_encoder, model_path=model_path, source=source)
    return tokenizer


def _read_folder_tokenizer(folder: Path, model_path: str, *, pad_token: str) -> Any:
    from transformers import CLIPTokenizer

    try:
        tokenizer = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # a damaged tokenizer.json / vocab.json raises many exception types
        raise ModelPathError(
            f"Cannot read the tokenizer of the model folder {model_path} ({folder}): {exc}",
            f"Repair or replace {folder} with the tokenizer that belongs to this model "
            "(tokenizer.json, or vocab.json and merges.txt).") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = pad_token
    return tokenizer


def _fit_length_to_encoder(tokenizer: Any, text_encoder: Any) -> None:
    """A tokenizer config without model_max_length reports a huge number; the encoder's positions bound it."""
    positions = getattr(text_encoder.config, "max_position_embeddings", CLIP_MAX_LENGTH)
    if tokenizer.model_max_length > positions:
        tokenizer.model_max_length = positions


def check_tokenizer_fits(tokenizer: Any, text_encoder: Any, *, model_path: str, source: str) -> None:
    """Refuse a tokenizer that can produce an id the text encoder has no embedding for."""
    embeddings = text_encoder.get_input_embeddings().num_embeddings
    largest_id = max(tokenizer.get_vocab().values())
    if largest_id < embeddings:
        return
    raise ModelPathError(
        f"The model {model_path} does not fit together: {source} has {largest_id + 1} token ids, but its "
        f"text encoder has only {embeddings} token embeddings, so training would fail on the first caption "
        "with a token id beyond them.",
        f"Put the tokenizer that belongs to this text encoder into the model folder {model_path} "
        "(tokenizer/, and tokenizer_2/ for SDXL), or choose a model whose tokenizer and text encoder match.")
