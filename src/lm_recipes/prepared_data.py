"""Prepared data: the tokenizer and blocks of a recipe, made once by `scripts/prepare.py` and loaded by every
training run of it, on any number of processes or machines, without reading or tokenizing the text again.

The folder is `prepared_dir`, or one under the datasets cache named by a hash of the keys that decide the data (so a
recipe finds its own). It holds `tokenizer/`, one `datasets.save_to_disk` folder per split (a streamed run's
training split is not there: it streams) and `prepared.json`, written last: the keys and the local files' sizes
and times it was made from. Training compares them with its recipe and names the first key or file that differs.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import fields
from pathlib import Path

import datasets
from datasets.fingerprint import Hasher

from . import datafiles
from . import tokenizer as tokenizers
from .arguments import DataArguments, TokenizerArguments
from .recipe import Recipe, RecipeError, plain

logger = logging.getLogger(__name__)

MANIFEST = "prepared.json"
FORMAT = 1  # bump when what a prepared folder holds changes
NOT_DATA = ("preprocessing_num_workers", "cache_dir", "overwrite_cache", "prepared_dir", "max_train_samples",
            "max_eval_samples", "mlm_probability")  # fmt: skip  # read at training time, or where, not what


# Data keys added since FORMAT 1, left out at their default: a folder prepared before them keeps its name and matches.
ADDED = {"whole_word_mask": False}


def keys(recipe: Recipe) -> dict:
    """The recipe keys that decide the tokenizer and the blocks."""
    m = recipe.model
    out = {f.name: getattr(recipe.tokenizer, f.name) for f in fields(TokenizerArguments)}
    out.update({f.name: getattr(recipe.data, f.name) for f in fields(DataArguments) if f.name not in NOT_DATA})
    out.update(objective=m.objective, model_type=m.model_type, model_name_or_path=m.model_name_or_path,
               max_position_embeddings=m.max_position_embeddings, seed=recipe.training.seed)  # fmt: skip
    for key, default in ADDED.items():
        if out[key] == default:
            del out[key]
    return plain(out)


def sources(args: DataArguments) -> dict[str, list[int]]:
    """Each local data file and its [size, modification time in ns]: a file changed since preparing shows here."""
    out = {}
    for key in ("train_files", "validation_files"):
        for path in datafiles.expand(key, getattr(args, key)) if getattr(args, key) else []:
            st = os.stat(path)
            out[os.path.abspath(path)] = [st.st_size, st.st_mtime_ns]
    return out


def location(recipe: Recipe) -> Path:
    d = recipe.data
    if d.prepared_dir:
        return Path(d.prepared_dir)
    root = Path(d.cache_dir or datasets.config.HF_DATASETS_CACHE) / "lm_recipes_prepared"
    return root / Hasher.hash([FORMAT, keys(recipe), sources(d)])


def save(recipe: Recipe, tokenizer, splits: dict, labels: list[str] | None) -> Path:
    """Write a prepared folder: staged beside it and renamed into place, so a kill leaves the old one or the new."""
    folder = location(recipe)
    staged = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    for old in folder.parent.glob(f"{folder.name}.partial-*") if folder.parent.is_dir() else []:
        shutil.rmtree(old, ignore_errors=True)  # left by a killed prepare
    staged.mkdir(parents=True)
    tokenizer.save_pretrained(str(staged / "tokenizer"))
    for split, dataset in splits.items():
        dataset.save_to_disk(str(staged / split))
    manifest = {"format": FORMAT, "keys": keys(recipe), "files": sources(recipe.data), "labels": labels,
                "splits": {split: len(dataset) for split, dataset in splits.items()}}  # fmt: skip
    (staged / MANIFEST).write_text(json.dumps(manifest, indent=1))
    if folder.exists():
        retired = folder.with_name(f"{folder.name}.partial-{os.getpid()}-old")
        os.replace(folder, retired)
        os.replace(staged, folder)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staged, folder)
    return folder


def find(recipe: Recipe) -> tuple[Path, dict] | None:
    """(folder, manifest) of this recipe's prepared data, or None when there is none. Raises RecipeError when
    `prepared_dir` names a folder prepared from other keys or files, or not prepared at all."""
    folder = location(recipe)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        if recipe.data.prepared_dir:
            raise RecipeError(
                f"prepared_dir: {folder} holds no prepared data; make it with `python scripts/prepare.py RECIPE.yaml` "
                f"(the same recipe and flags), or drop prepared_dir"
            )
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
        saved_keys, saved_files = manifest["keys"], manifest["files"]
    except (ValueError, KeyError, TypeError) as e:
        raise RecipeError(f"prepared_dir: {manifest_path} cannot be read ({e}); prepare again with "
                          f"`python scripts/prepare.py RECIPE.yaml`") from None  # fmt: skip
    fix = "prepare again with `python scripts/prepare.py RECIPE.yaml` (it replaces the folder), or use the keys it has"
    if manifest.get("format") != FORMAT:
        raise RecipeError(f"prepared_dir: {folder} was prepared by another release of lm-recipes; {fix}")
    if difference := _difference(saved_keys, keys(recipe)):
        raise RecipeError(f"prepared_dir: {folder} does not match the recipe: {difference}; {fix}")
    files = sources(recipe.data)
    for path in sorted(set(files) | set(saved_files)):
        if files.get(path) != saved_files.get(path):
            change = "is gone" if path not in files else "is new" if path not in saved_files else "changed"
            raise RecipeError(f"prepared_dir: {folder} was prepared from other data: {path} {change} since; {fix}")
    return folder, manifest


def _difference(saved_keys: dict, here: dict) -> str | None:
    for key in sorted(set(here) | set(saved_keys)):
        if here.get(key) != saved_keys.get(key):
            return f"{key} is {saved_keys.get(key)!r} there, {here.get(key)!r} here"
    return None


def nearest(recipe: Recipe) -> str | None:
    """For a recipe with no prepared folder of its own: how the newest folder prepared under the same cache differs
    from it, e.g. "block_size is 64 there, 32 here (in FOLDER)", so that the user learns which key moved."""
    if recipe.data.prepared_dir:
        return None
    here, found = keys(recipe), []
    for path in location(recipe).parent.glob(f"*/{MANIFEST}"):
        try:
            found.append((path.stat().st_mtime, path.parent, json.loads(path.read_text())["keys"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    if not found:
        return None
    _, folder, saved = max(found, key=lambda f: f[0])
    difference = _difference(saved, here)
    return f"{difference} (in {folder})" if difference else f"its local files changed since (in {folder})"


def load(folder: Path, manifest: dict):
    """(tokenizer, {split: Dataset}, labels) of a prepared folder, memory-mapped: seconds, whatever its size."""
    tokenizer = tokenizers.load(str(folder / "tokenizer"), "prepared_dir")
    try:
        splits = {split: datasets.load_from_disk(str(folder / split)) for split in manifest["splits"]}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RecipeError(f"prepared_dir: {folder} is damaged ({type(e).__name__}: {e}); prepare again with `python "
                          f"scripts/prepare.py RECIPE.yaml`") from None  # fmt: skip
    return tokenizer, splits, manifest.get("labels")
