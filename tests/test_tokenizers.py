"""A diffusers folder's own tokenizer(s): used for training and sampling, refused when they do not fit."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import dump, event_types, make_run_config, run_engine
from trainer.config import TrainConfig
from trainer.families import ModelPathError, load_model
from trainer.tiny import build_tiny_pipeline

WORDS = ("sks", "disc", "red", "circle", "a", ",")
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def small_tokenizer(pad_token: str = EOS):
    """A CLIP BPE tokenizer that knows a handful of whole words (ids far below the standard 49,408)."""
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {}
    merges: list[tuple[str, str]] = []
    for char in sorted(set("".join(WORDS))):
        vocab.setdefault(char, len(vocab))
        vocab.setdefault(char + "</w>", len(vocab))
    for word in WORDS:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merged = pieces[0] + pieces[1]
            if (pieces[0], pieces[1]) not in merges:
                merges.append((pieces[0], pieces[1]))
            vocab.setdefault(merged, len(vocab))
            pieces = [merged] + pieces[2:]
    for special in (BOS, EOS):
        vocab[special] = len(vocab)
    if pad_token not in vocab:
        vocab[pad_token] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77, pad_token=pad_token)


def text_encoder_for(tokenizer, like):
    """A text encoder shaped like `like` whose embedding has exactly the tokenizer's ids."""
    from transformers import CLIPTextConfig

    config = CLIPTextConfig(**{**like.config.to_dict(), "vocab_size": len(tokenizer),
                               "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                               "pad_token_id": tokenizer.pad_token_id})
    return type(like)(config)


@pytest.fixture(scope="module")
def small_vocab_sd1(tmp_path_factory) -> Path:
    pipe = build_tiny_pipeline("sd1")
    pipe.tokenizer = small_tokenizer()
    pipe.text_encoder = text_encoder_for(pipe.tokenizer, pipe.text_encoder)
    folder = tmp_path_factory.mktemp("tok") / "small-vocab-sd1"
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def _expected_ids(tokenizer, text: str) -> list[int]:
    vocab = tokenizer.get_vocab()
    return [vocab[BOS]] + [vocab[w + "</w>"] for w in text.replace(",", " ,").split()] + [vocab[EOS]]


def test_sd_folder_tokenizer_is_used_for_training_and_sampling(small_vocab_sd1):
    family, comp = load_model(TrainConfig(pretrained_model_name_or_path=str(small_vocab_sd1)))
    assert len(comp.tokenizer) == len(small_tokenizer())
    ids = family.tokenize(comp, ["sks disc, red circle"], max_token_length=75)[0, 0].tolist()
    expected = _expected_ids(comp.tokenizer, "sks disc, red circle")
    assert ids[:len(expected)] == expected
    assert max(ids) < comp.text_encoder.get_input_embeddings().num_embeddings
    pipe = family.sampling_pipeline(comp, "ddim")
    assert pipe.tokenizer is comp.tokenizer


def test_engine_trains_and_samples_with_the_folder_tokenizer(small_vocab_sd1, image_root, tmp_path):
    cfg = make_run_config(tmp_path, small_vocab_sd1, image_root, max_train_epochs=1, save_every_n_epochs=0,
                          sample_at_first=True, sample_prompts="sks disc --w 64 --h 64 --s 2")
    proc, events = run_engine(cfg, tmp_path)
    assert proc.returncode == 0, dump(events) + proc.stderr
    assert "sample" in event_types(events) and events[-1]["status"] == "completed"


def test_tokenizer_larger_than_the_embedding_is_refused_before_training(image_root, tmp_path):
    pipe = build_tiny_pipeline("sd1")  # the bundled 49,408-token tokenizer ...
    pipe.text_encoder = text_encoder_for(small_tokenizer(), pipe.text_encoder)  # ... a 40-token embedding
    folder = tmp_path / "mismatched-sd1"
    pipe.save_pretrained(folder, safe_serialization=True)

    cfg = make_run_config(tmp_path, folder, image_root)
    proc, events = run_engine(cfg, tmp_path)
    assert proc.returncode == 1, dump(events) + proc.stderr
    error = next(e for e in events if e["type"] == "error")
    assert error["code"] == "model_path" and error["field"] == "pretrained_model_name_or_path", dump(events)
    assert str(folder) in error["message"] and "49408" in error["message"]
    assert "step" not in event_types(events) and "start" not in event_types(events)


def test_sdxl_folder_uses_both_own_tokenizers_and_checks_each(tmp_path):
    pipe = build_tiny_pipeline("sdxl")
    pipe.tokenizer, pipe.tokenizer_2 = small_tokenizer(), small_tokenizer(pad_token="!")
    pipe.text_encoder = text_encoder_for(pipe.tokenizer, pipe.text_encoder)
    pipe.text_encoder_2 = text_encoder_for(pipe.tokenizer_2, pipe.text_encoder_2)
    folder = tmp_path / "small-vocab-sdxl"
    pipe.save_pretrained(folder, safe_serialization=True)

    family, comp = load_model(TrainConfig(pretrained_model_name_or_path=str(folder)))
    assert [len(t) for t in comp.tokenizers] == [len(pipe.tokenizer), len(pipe.tokenizer_2)]
    assert comp.tokenizers[1].pad_token == "!"
    cond = family.encode_prompts(comp, ["sks disc, red circle"])
    assert cond["encoder_hidden_states"].shape[1] == 77

    big = build_tiny_pipeline("sdxl").tokenizer_2  # 49,408 tokens against the small second encoder
    big.save_pretrained(folder / "tokenizer_2")
    with pytest.raises(ModelPathError) as refused:
        load_model(TrainConfig(pretrained_model_name_or_path=str(folder)))
    assert str(folder) in refused.value.message and "tokenizer_2" in refused.value.message
