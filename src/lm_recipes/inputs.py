"""The folders a recipe names, checked before any data, tokenizer or model is built: output_dir can be written, and a
starting checkpoint or tokenizer folder holds what loading it needs (a few small reads, no weights loaded)."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from safetensors import SafetensorError, safe_open

if TYPE_CHECKING:
    from .recipe import Recipe

WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model")
A_MODEL = "give a run's output_dir or one of its checkpoint-N folders"


def problems(recipe: Recipe) -> list[str]:
    found = [output_dir_problem(recipe.training.output_dir)]
    if recipe.model.model_name_or_path:
        found.append(checkpoint_problem(recipe.model.model_name_or_path))
    if recipe.tokenizer.tokenizer_name:
        found.append(tokenizer_problem(recipe.tokenizer.tokenizer_name, "tokenizer_name"))
    return [p for p in found if p]


def output_dir_problem(output_dir: str) -> str | None:
    """output_dir must be a folder, or a path where one can be made, that this process can write in."""
    path = Path(output_dir).expanduser()
    if path.exists() and not path.is_dir():
        return f"output_dir: {output_dir} is a file, not a folder; give a folder (it is made if missing)"
    existing = path.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"output_dir: {output_dir} is under {existing}, which is a file; give a folder elsewhere"
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "in it" if existing == path.absolute() else f"in {existing}, where it would be made"
        return f"output_dir: {output_dir} cannot be written {what} (no permission, or read-only); choose another"
    return None


def hub_id(name: str) -> bool:
    """Whether `name` can be a Hub repo id (user/name), not a path: ./x, /x, ~/x and a/b/c are paths."""
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep in name.replace("/", ""):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _folder_problem(name: str, key: str, holds: str) -> str | None:
    path = Path(name).expanduser()
    if not path.exists():
        if hub_id(name):
            return None  # from_pretrained loads it from the Hub, or says why it cannot
        return f"{key}: {name} does not exist, and is not a Hub id (user/name); {holds}"
    if not path.is_dir():
        return f"{key}: {name} is a file; {holds}"
    return None


def checkpoint_problem(name: str, key: str = "model_name_or_path") -> str | None:
    """What keeps the checkpoint folder `name` from loading: a missing or damaged config.json, no weights, truncated
    safetensors, no tokenizer. None for a sound folder, or a Hub id (loaded later)."""
    holds = f"{A_MODEL} (a folder with config.json, model.safetensors and the tokenizer)"
    if problem := _folder_problem(name, key, holds):
        return problem
    path = Path(name).expanduser()
    if not path.exists():
        return None
    config = path / "config.json"
    if not config.is_file():
        return f"{key}: {name} holds no config.json, so no saved model; {A_MODEL}"
    try:
        if not isinstance(json.loads(config.read_bytes()), dict):
            raise ValueError("not a JSON object")
    except ValueError as e:  # UnicodeDecodeError and JSONDecodeError included
        return f"{key}: {config} is not a valid model config ({e}); the checkpoint is damaged: copy it or {A_MODEL}"
    weights = [w for w in WEIGHTS if (path / w).is_file()]
    if not weights:
        return f"{key}: {name} holds no model weights (model.safetensors); {A_MODEL}"
    if why := unreadable(path / weights[0]):
        return f"{key}: {path / weights[0]} {why}; the checkpoint is damaged: copy it again or {A_MODEL}"
    return tokenizer_problem(name, key)


def tokenizer_problem(name: str, key: str = "tokenizer_name") -> str | None:
    """A tokenizer folder must hold a tokenizer file; None for a sound one or a Hub id."""
    holds = "give a folder saved with tokenizer.save_pretrained (tokenizer.json), or a Hub id"
    if problem := _folder_problem(name, key, holds):
        return problem
    path = Path(name).expanduser()
    if path.exists() and not any((path / f).is_file() for f in TOKENIZER_FILES):
        return f"{key}: {name} holds no tokenizer (no {' or '.join(TOKENIZER_FILES[:3])}); {holds}"
    return None


def unreadable(path: Path) -> str | None:
    """Why a saved file cannot be read to its end, for the formats a checkpoint holds (None: it can, or is another)."""
    if path.name.endswith(".index.json"):
        try:
            shards = set(json.loads(path.read_text())["weight_map"].values())
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
            return "is not a readable index"
        missing = sorted(s for s in shards if not (path.parent / s).is_file())
        return f"names missing shards {missing}" if missing else None
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), "pt"):
                return None
        except (SafetensorError, OSError) as e:
            return f"is truncated or corrupt ({e})"
    if path.suffix in (".pt", ".pth", ".bin"):  # torch.save's zip format: its directory is written at the very end
        try:
            with zipfile.ZipFile(path) as z:
                size = path.stat().st_size
                if any(i.header_offset + i.compress_size > size for i in z.infolist()):
                    return "is truncated"
        except (zipfile.BadZipFile, OSError):
            return "is truncated or corrupt (not a complete torch.save file)"
    return None
