"""Checkpoints: the `checkpoint-N` folders of an output_dir, which of them are complete, and where a run starts: fresh,
from the newest complete local checkpoint, or from one an earlier run pushed to the Hub (downloaded by hub.py).

A save is committed the way `torch.distributed.checkpoint` commits one: every file is written and flushed to disk
first, then a small manifest (`complete.json`: each file and its size) is renamed into place last. A folder without
it was cut short (a kill, a full disk) unless its files prove otherwise, and is never resumed from.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import SafetensorError
from transformers import TrainerState
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from . import hub, inputs
from . import recipe as recipes
from .recipe import Recipe, RecipeError

logger = logging.getLogger(__name__)

FRESH = {"false", "no", "never"}
LAST = {"true", "last"}
_NAME = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
MANIFEST = "complete.json"  # written last into a checkpoint folder: the commit of its save
ASIDE = "incomplete-"  # prefix of a cut-short checkpoint moved aside (not `checkpoint-*`, which the Trainer rotates)
WEIGHTS = re.compile(r"^(model|pytorch_model)(-\d+-of-\d+)?\.(safetensors|bin)(\.index\.json)?$|^pytorch_model_fsdp|"
                     r"^global_step\d+$")  # fmt: skip


def step(folder: str | Path) -> int | None:
    """N of a `checkpoint-N` folder (its name only), None for any other name."""
    match = _NAME.match(Path(folder).name)
    return int(match.group(1)) if match else None


def numbered(names: list[str]) -> list[str]:
    """The `checkpoint-N` names among `names`, by step."""
    return sorted((n for n in names if step(n) is not None), key=step)


def saved(output_dir: str | Path) -> list[Path]:
    """The checkpoint folders of output_dir, oldest step first."""
    out = Path(output_dir)
    if not out.is_dir():
        return []
    return [out / n for n in numbered([p.name for p in out.iterdir() if p.is_dir()])]


def latest(output_dir: str | Path) -> Path | None:
    """The complete checkpoint of output_dir with the highest step, if any."""
    return resumable(output_dir)[0]


def resumable(output_dir: str | Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """(the newest complete checkpoint of output_dir or None, the newer incomplete ones with what is wrong)."""
    skipped = []
    for folder in reversed(saved(output_dir)):
        if (why := problem(folder)) is None:
            return folder, skipped
        skipped.append((folder, why))
    return None, skipped


def problem(folder: str | Path) -> str | None:
    """Why `folder` cannot be resumed from, or None when it is a complete checkpoint. With its manifest, every file
    must be there at the size it was saved; without one (saved by an earlier release or another tool, or cut short
    before its commit), what the Trainer loads must be there and readable to its end."""
    folder = Path(folder)
    manifest = folder / MANIFEST
    if manifest.is_file():
        try:
            files = json.loads(manifest.read_text())["files"]
            files = {str(name): int(size) for name, size in files.items()}
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
            return f"its {MANIFEST} is not readable"
        for name, size in files.items():
            path = folder / name
            if not path.is_file():
                return f"{name} is missing"
            if path.stat().st_size != size:
                return f"{name} holds {path.stat().st_size} bytes, not the {size} it was saved with (truncated?)"
        return None
    names = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    if not any(WEIGHTS.match(n) for n in names) and TRAINER_STATE_NAME not in names:
        return "it is not a checkpoint folder (no model weights, no trainer_state.json)"
    if TRAINER_STATE_NAME not in names:
        return f"it has no {TRAINER_STATE_NAME}: its save was cut short"
    try:
        int(json.loads((folder / TRAINER_STATE_NAME).read_text())["global_step"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return f"its {TRAINER_STATE_NAME} is not readable (cut short?)"
    if not any(WEIGHTS.match(n) for n in names):
        return "it holds no model weights"
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if why := inputs.unreadable(path):
            return f"{path.relative_to(folder)} {why}"
    return None


def commit(folder: str | Path) -> None:
    """Make a saved checkpoint the resume point: flush each of its files to disk, then write the manifest and rename
    it into place, so that the folder counts as complete only once everything in it is on disk."""
    folder = Path(folder)
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        _fsync(path)
        files[path.relative_to(folder).as_posix()] = path.stat().st_size
    for sub in sorted({p.parent for p in folder.rglob("*")} | {folder}, reverse=True):
        _fsync(sub)
    staged = folder / f".{MANIFEST}.tmp"
    staged.write_text(json.dumps({"files": files}, indent=1) + "\n")
    _fsync(staged)
    os.replace(staged, folder / MANIFEST)
    _fsync(folder)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def set_aside(incomplete: list[tuple[Path, str]]) -> None:
    """Move cut-short checkpoints out of the way as `incomplete-checkpoint-N` (kept, never deleted: they may hold what
    someone wants to look at), so neither a rerun nor the Trainer's rotation takes them for checkpoints."""
    for folder, why in incomplete:
        folder = Path(folder)
        target, n = folder.with_name(ASIDE + folder.name), 1
        while target.exists():
            n += 1
            target = folder.with_name(f"{ASIDE}{folder.name}.{n}")
        folder.rename(target)
        logger.warning("%s is incomplete (%s): moved aside to %s", folder, why, target.name)


class SaveError(Exception):
    """A checkpoint or the final model could not be written (a full disk, a quota, permissions)."""


@contextmanager
def saving(folder: str | Path, what: str, remove_partial: bool = False):
    """Turn a failed write into one SaveError that says why in words (a full disk is named as such: torch reports it
    as "unexpected pos" or "file write failed") and what is still safe. With `remove_partial`, the folder being
    written is removed: what it holds is cut short and only takes the space a rerun needs."""
    folder = Path(folder)
    try:
        yield
    except (OSError, RuntimeError, SafetensorError) as e:
        if isinstance(e, RuntimeError) and not _write_failure(e):
            raise
        reason = _reason(e, folder)
        if remove_partial and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
            reason += f"; the partial {folder.name} was removed"
        safe = latest(folder.parent if remove_partial else folder)
        then = f"{safe.name} is intact: " if safe else "No checkpoint was saved before: "
        fix = "free some space" if reason.startswith(tuple(_FULL.values())) else "fix that"
        goal = f"to resume from {safe.name}" if safe else "to start again"
        raise SaveError(
            f"could not save {what} in {folder.parent if remove_partial else folder}: {reason}. {then}"
            f"{fix} and rerun the same command {goal}"
        ) from e


_FULL = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}


def _write_failure(error: BaseException) -> bool:
    text = str(error)
    return any(k in text for k in ("unexpected pos", "file write failed", "PytorchStreamWriter", "inline_container"))


def _reason(error: BaseException, folder: Path) -> str:
    for e in (error, error.__cause__, error.__context__):
        if isinstance(e, OSError) and e.errno in _FULL:
            return _FULL[e.errno]
    text = str(error)
    if "No space left" in text or "StorageFull" in text:
        return _FULL[errno.ENOSPC]
    if "Disk quota" in text or "QuotaExceeded" in text:
        return _FULL[errno.EDQUOT]
    try:  # torch's writer does not pass errno on: an (almost) full file system says it
        stat = os.statvfs(next(p for p in (folder, *folder.parents) if p.exists()))
        if stat.f_bavail * stat.f_frsize < 1 << 20:
            return f"{_FULL[errno.ENOSPC]} ({stat.f_bavail * stat.f_frsize // 1024} KiB free)"
    except OSError:
        pass
    return f"{type(error).__name__}: {error}"


@dataclass
class Start:
    """Where a run starts. `checkpoint` is a local folder to resume from, or None for a fresh start; `hub` is a Hub
    repo's (repo, folder, step) to download into output_dir first; `finished` is the checkpoint's state when it is
    already at the run's last step (nothing left to train); `incomplete` are output_dir's newer checkpoints that were
    cut short, with why, to move aside once the run writes."""

    checkpoint: str | None = None
    hub: tuple[str, str, int] | None = None
    finished: TrainerState | None = None
    hub_recipe: dict | None = None  # the Hub repo's recipe.yaml keys, checked again once the tokenizer is known
    incomplete: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def local(self) -> bool:
        """The checkpoint is output_dir's own: its recipe.yaml is checked again once the tokenizer is known."""
        return self.checkpoint is not None and self.hub is None


def start(recipe: Recipe) -> Start:
    """Where the recipe's run starts, from `resume_from_checkpoint` and what output_dir holds. Reads only; raises
    RecipeError when output_dir (or the Hub repo) holds another recipe's run, the checkpoint named is missing or
    incomplete, or output_dir's checkpoints are all incomplete."""
    args = recipe.training
    wanted = (args.resume_from_checkpoint or "").strip()
    if wanted.lower() in FRESH:
        return Start()
    if hub.is_repo_id(wanted):
        folder, at, saved = hub.find_checkpoint(recipe, wanted)  # the repo's recipe checked
        mine, incomplete = own(recipe)
        if mine is not None and step(mine) >= at:
            logger.info("%s is not behind %s (step %d): resuming from it", mine, wanted, at)
            return _finished(Start(str(mine), incomplete=incomplete), args)
        return Start(hub=(wanted, folder, at), hub_recipe=saved, incomplete=incomplete)
    if wanted and wanted.lower() not in LAST:
        if not Path(wanted).is_dir():
            raise RecipeError(f"resume_from_checkpoint: {wanted} is not a checkpoint folder; give one, or true")
        if why := problem(wanted):
            raise RecipeError(f"resume_from_checkpoint: {wanted} cannot be resumed from: {why}; give a complete "
                              f"checkpoint, or true for the newest complete one of output_dir")  # fmt: skip
        return _finished(Start(wanted), args)
    mine, incomplete = own(recipe)
    if mine is None and incomplete:
        cut = "; ".join(f"{folder.name}: {why}" for folder, why in incomplete)
        raise RecipeError(
            f"{args.output_dir} has no complete checkpoint to resume from ({cut}); set resume_from_checkpoint: false "
            f"to start fresh (it removes them), or use another output_dir"
        )
    if mine is None and wanted.lower() in LAST:
        raise RecipeError(
            f"resume_from_checkpoint: {wanted} but {args.output_dir} has no checkpoint-* folder to resume from; "
            f"drop the key to start fresh"
        )
    for folder, why in incomplete:
        logger.warning("%s is incomplete (%s): resuming from %s, the newest complete checkpoint", folder, why, mine)
    return _finished(Start(str(mine) if mine else None, incomplete=incomplete), args)


def own(recipe: Recipe) -> tuple[Path | None, list[tuple[Path, str]]]:
    """output_dir's newest complete checkpoint and the incomplete ones after it (see `resumable`); raises if they
    belong to another recipe's run (its keys as far as they are known before the tokenizer is built: see
    Recipe.identity)."""
    last, incomplete = resumable(recipe.training.output_dir)
    if last is not None or incomplete:
        recipes.check_same(recipe, Path(recipe.training.output_dir))
    return last, incomplete


def _finished(start: Start, args) -> Start:
    if start.checkpoint is None:
        return start
    state = TrainerState.load_from_json(str(Path(start.checkpoint) / TRAINER_STATE_NAME))
    if state.global_step >= (args.max_steps if args.max_steps > 0 else state.max_steps):
        start.finished = state
    return start


def clear(output_dir: str, also: tuple[str, ...] = ()) -> None:
    """Starting fresh: the checkpoints of an earlier run in output_dir go, and the files named in `also`."""
    for folder in saved(output_dir):
        logger.info("Starting fresh: removing %s", folder)
        shutil.rmtree(folder)
    for name in also:
        (Path(output_dir) / name).unlink(missing_ok=True)
