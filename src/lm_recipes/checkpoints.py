"""Checkpoints: the `checkpoint-N` folders of an output_dir, their steps, and where a run starts: fresh, from a local
checkpoint, or from one an earlier run pushed to the Hub (downloaded by hub.py)."""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from transformers import TrainerState
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from . import hub
from . import recipe as recipes
from .recipe import Recipe, RecipeError

logger = logging.getLogger(__name__)

FRESH = {"false", "no", "never"}
LAST = {"true", "last"}
_NAME = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


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
    """The checkpoint of output_dir with the highest step, if any."""
    found = saved(output_dir)
    return found[-1] if found else None


@dataclass
class Start:
    """Where a run starts. `checkpoint` is a local folder to resume from, or None for a fresh start; `hub` is a Hub
    repo's (repo, folder, step) to download into output_dir first; `finished` is the checkpoint's state when it is
    already at the run's last step (nothing left to train)."""

    checkpoint: str | None = None
    hub: tuple[str, str, int] | None = None
    finished: TrainerState | None = None
    hub_recipe: dict | None = None  # the Hub repo's recipe.yaml keys, checked again once the tokenizer is known

    @property
    def local(self) -> bool:
        """The checkpoint is output_dir's own: its recipe.yaml is checked again once the tokenizer is known."""
        return self.checkpoint is not None and self.hub is None


def start(recipe: Recipe) -> Start:
    """Where the recipe's run starts, from `resume_from_checkpoint` and what output_dir holds. Reads only; raises
    RecipeError when output_dir (or the Hub repo) holds another recipe's run, or the checkpoint named is missing."""
    args = recipe.training
    wanted = (args.resume_from_checkpoint or "").strip()
    if wanted.lower() in FRESH:
        return Start()
    if hub.is_repo_id(wanted):
        folder, at, saved = hub.find_checkpoint(recipe, wanted)  # the repo's recipe checked
        mine = own(recipe)
        if mine is not None and step(mine) >= at:
            logger.info("%s is not behind %s (step %d): resuming from it", mine, wanted, at)
            return _finished(Start(str(mine)), args)
        return Start(hub=(wanted, folder, at), hub_recipe=saved)
    if wanted and wanted.lower() not in LAST:
        if not Path(wanted).is_dir():
            raise RecipeError(f"resume_from_checkpoint: {wanted} is not a checkpoint folder; give one, or true")
        return _finished(Start(wanted), args)
    mine = own(recipe)
    if mine is None and wanted.lower() in LAST:
        raise RecipeError(
            f"resume_from_checkpoint: {wanted} but {args.output_dir} has no checkpoint-* folder to resume from; "
            f"drop the key to start fresh"
        )
    return _finished(Start(str(mine) if mine else None), args)


def own(recipe: Recipe) -> Path | None:
    """output_dir's newest checkpoint; raises if it belongs to another recipe's run (its keys as far as they are
    known before the tokenizer is built: see Recipe.identity)."""
    last = latest(recipe.training.output_dir)
    if last is not None:
        recipes.check_same(recipe, Path(recipe.training.output_dir))
    return last


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
