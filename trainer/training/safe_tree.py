"""Save and load nested state (optimizer, scheduler, RNG) without pickle.

A tree of dicts, lists, tuples, numbers, strings, None, torch tensors and numpy arrays is written
as two files: `<stem>.json` (the structure, every tensor replaced by a reference) and
`<stem>.safetensors` (the tensors). Neither format can run code when read, so a state folder from
anywhere is safe to open. Anything else in the tree is refused when saving, never guessed at.

JSON tags (a dict with a single key starting with "__"):
  {"__tensor__": "t12"}                     a tensor in the safetensors file
  {"__tuple__": [...]}                      a tuple (JSON has only lists)
  {"__dict__": [[key, value], ...]}         a dict whose keys are not all strings (optimizer state)
  {"__ndarray__": [...], "dtype": "uint32"} a numpy array (numpy's RNG key)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer.fileio import write_synced

TAGS = ("__tensor__", "__tuple__", "__dict__", "__ndarray__")
NDARRAY_DTYPES = ("uint32", "int64", "float64", "uint8")


class SafeTreeError(ValueError):
    """A file of a state tree is missing, damaged or holds something this format does not allow."""

    def __init__(self, path: Path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)
        self.problem = problem


def tree_files(folder: Path, stem: str) -> tuple[Path, Path]:
    return Path(folder) / f"{stem}.json", Path(folder) / f"{stem}.safetensors"


def save_tree(folder: Path, stem: str, tree: Any) -> None:
    """Write `tree` as `<stem>.json` + `<stem>.safetensors` in `folder` (a fresh temporary folder)."""
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    structure = _encode(tree, tensors)
    json_path, tensor_path = tree_files(folder, stem)
    # Bytes written by Python, not safetensors.save_file: a full disk is then an OSError (ENOSPC).
    write_synced(json_path, json.dumps(structure).encode("utf-8"))
    write_synced(tensor_path, save(tensors))


def load_tree(folder: Path, stem: str) -> Any:
    """Read what save_tree wrote. Raises SafeTreeError naming the file that cannot be used."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    json_path, tensor_path = tree_files(folder, stem)
    for path in (json_path, tensor_path):
        if not path.is_file():
            raise SafeTreeError(path, "the file is missing")
    try:
        structure = json.loads(json_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SafeTreeError(json_path, f"not valid JSON ({exc})") from None
    try:
        tensors = load_file(str(tensor_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise SafeTreeError(tensor_path, f"not a readable safetensors file ({exc})") from None
    try:
        return _decode(structure, tensors)
    except (KeyError, TypeError, ValueError) as exc:
        raise SafeTreeError(json_path, f"damaged or from another program ({exc})") from None


def _encode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, float)):
        return obj  # json writes NaN/Infinity for the non-finite floats some optimizers keep
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        # clone: safetensors refuses tensors that share memory (views of one buffer)
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        if obj.dtype.name not in NDARRAY_DTYPES:
            raise TypeError(f"numpy arrays of {obj.dtype} cannot be saved in a state")
        return {"__ndarray__": obj.tolist(), "dtype": obj.dtype.name}
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, tensors) for k, v in obj.items()}
        return {"__dict__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in obj.items()]}
    raise TypeError(f"a {type(obj).__name__} cannot be saved in a state (only numbers, text, lists, "
                    "dicts and tensors)")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    tag = next((k for k in obj if k in TAGS), None)
    if tag == "__tensor__":
        return tensors[obj["__tensor__"]]
    if tag == "__tuple__":
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    if tag == "__dict__":
        return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__dict__"]}
    if tag == "__ndarray__":
        if obj.get("dtype") not in NDARRAY_DTYPES:
            raise ValueError(f"unknown array type {obj.get('dtype')!r}")
        return np.asarray(obj["__ndarray__"], dtype=obj["dtype"])
    return {k: _decode(v, tensors) for k, v in obj.items()}
