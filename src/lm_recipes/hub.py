"""Sharing on the Hub: the Trainer's own pushes, watched so that no failed upload goes unnoticed, a model card, a
final push that makes the repo match the local output, and resuming from a checkpoint pushed by an earlier run.

The Trainer uploads each checkpoint as a background future whose exception nobody reads, skips an upload while the
previous one is in flight (unless `hub_always_push`), and pushes the final model and a card only when
`trainer.push_to_hub()` is called. `Uploads` reads those futures; `finish()` makes the final push and reports.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from pathlib import Path

from huggingface_hub import HfApi, get_token, hf_hub_download, snapshot_download
from huggingface_hub.errors import HfHubHTTPError
from transformers import TrainerCallback
from transformers.trainer_utils import HubStrategy

from . import callbacks, checkpoints
from . import recipe as recipes
from .recipe import Recipe, RecipeError

logger = logging.getLogger(__name__)

# Errors of a request to the Hub: HTTP status errors; the transport errors (a refused connection, a timeout) of the
# HTTP library this huggingface_hub uses, whose HTTPError is HfHubHTTPError's base; and OSError (offline mode, a
# file missing from the local cache).
HUB_ERRORS = (HfHubHTTPError, HfHubHTTPError.__bases__[0], OSError)
_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


class PushError(Exception):
    """Training finished and its outputs are saved, but the Hub repo does not match them."""


def describe(error: BaseException, token: str | None = None) -> str:
    """One line for a Hub request's error, any token blanked out should the error quote it."""
    text = " ".join(f"{type(error).__name__}: {error}".split())
    for secret in {token, get_token()} - {None, ""}:
        text = text.replace(secret, "***")
    return text


class Uploads(TrainerCallback):
    """Reports each upload that failed or was skipped, as soon as the Trainer's next save reveals it; and keeps the
    files an upload sends unchanged while it runs.

    An upload hashes each file, then sends it: a file appended in between (TensorBoard's event file, samples.jsonl)
    fails the whole upload. So each push starts with the event files flushed, and the next log (which is what writes
    to them, before the loggers and the samples) waits for that push to finish. Attach with `attach()`, which puts
    this callback before the loggers.
    """

    def __init__(self, trainer):
        self.trainer = trainer
        self.jobs: dict = {}  # future -> (step, "model" or "checkpoint"): what it uploads
        self.failed: dict[tuple[int, str], str] = {}  # (step, what) -> what went wrong

    def on_push_begin(self, args, state, control, **kwargs):
        callbacks.flush_writers(self.trainer)

    def on_log(self, args, state, control, **kwargs):
        push = getattr(self.trainer, "push_in_progress", None)
        if push is not None and not push.is_done():
            logger.info("Hub: waiting for the upload of the last save before logging to the files it sends")
            push.wait_until_done()

    def on_save(self, args, state, control, **kwargs):
        # Called right after the Trainer's _save_checkpoint, which starts (or skips) the save's uploads: the output
        # folder's model files, then for checkpoint / all_checkpoints the checkpoint folder.
        if args.hub_strategy == HubStrategy.END or not self.trainer.is_world_process_zero():
            return
        self.collect(args.hub_token)
        push = getattr(self.trainer, "push_in_progress", None)
        new = [job for job in (push.jobs if push else []) if job not in self.jobs]
        for job, what in zip(new, ("model", "checkpoint"), strict=False):  # no checkpoint upload with every_save
            self.jobs[job] = (state.global_step, what)
        if not new:
            logger.warning(
                "Hub: the upload of step %d was skipped because the previous one is still running "
                "(set hub_always_push: true to queue every save); the final push will include it",
                state.global_step,
            )

    def collect(self, token: str | None = None) -> None:
        """Log the uploads that have failed since the last look."""
        for job, key in self.jobs.items():
            if job.done() and key not in self.failed and job.exception() is not None:
                self.failed[key] = describe(job.exception(), token)
                logger.error("Hub: the %s upload of step %d failed: %s", key[1], key[0], self.failed[key])

    def checkpoints_uploaded(self) -> set[int]:
        return {
            s for job, (s, what) in self.jobs.items() if what == "checkpoint" and job.done() and not job.exception()
        }


def attach(trainer) -> Uploads | None:
    """With push_to_hub, the callback that watches the Trainer's uploads, placed after DefaultFlowCallback and before
    every logger and watcher (its on_log must wait before they write); None without."""
    if not trainer.args.push_to_hub:
        return None
    uploads = Uploads(trainer)
    trainer.callback_handler.callbacks.insert(1, uploads)
    return uploads


def finish(trainer, uploads: Uploads | None) -> None:
    """The final push: model, tokenizer, recipe, results, plots and model card, then the checkpoints the strategy
    keeps in the repo that did not arrive. Raises PushError naming everything the repo is still missing."""
    args = trainer.args
    if not trainer.is_world_process_zero():
        trainer.push_to_hub()  # the other processes only join the final save
        return
    problems = []
    try:
        trainer.push_to_hub(commit_message="End of training", blocking=True)
    except HUB_ERRORS as e:
        problems.append(f"the final push of {args.output_dir}: {describe(e, args.hub_token)}")
    if uploads is not None:
        uploads.collect(args.hub_token)  # push_to_hub waited for the uploads still running
    if not problems and args.hub_strategy in (HubStrategy.CHECKPOINT, HubStrategy.ALL_CHECKPOINTS):
        problems += _push_missing_checkpoints(trainer, uploads.checkpoints_uploaded() if uploads else set())
    if not problems:
        problems += _compare(trainer)
    if problems:
        raise PushError(
            f"the run finished and its outputs are in {args.output_dir}, but the Hub repo {trainer.hub_model_id} "
            f"does not match them: " + "; ".join(problems) + ". To push again, run the same command (it finds the "
            f"run at its last step, trains nothing and pushes), or: hf upload {trainer.hub_model_id} "
            f"{args.output_dir} . --exclude 'checkpoint-*' --exclude '_*'"
        )
    if uploads is not None and uploads.failed:
        logger.warning(
            "Hub: %d upload(s) had failed during training; the final push made up for them", len(uploads.failed)
        )
    logger.info("Hub: %s matches %s", trainer.hub_model_id, args.output_dir)


def _push_missing_checkpoints(trainer, uploaded: set[int]) -> list[str]:
    """Upload the local checkpoints whose own upload failed or was skipped (for `checkpoint`, only the last)."""
    args = trainer.args
    local = checkpoints.saved(args.output_dir)
    if args.hub_strategy == HubStrategy.CHECKPOINT:
        local = local[-1:]
    problems = []
    for folder in local:
        step = checkpoints.step(folder)
        if step in uploaded:
            continue
        in_repo = "last-checkpoint" if args.hub_strategy == HubStrategy.CHECKPOINT else folder.name
        logger.info("Hub: uploading %s as %s, which had not arrived", folder.name, in_repo)
        try:
            HfApi().upload_folder(
                repo_id=trainer.hub_model_id,
                folder_path=folder,
                path_in_repo=in_repo,
                commit_message=f"Training in progress, step {step}, checkpoint",
                token=args.hub_token,
                revision=args.hub_revision,
            )
        except HUB_ERRORS as e:
            problems.append(f"{folder.name} as {in_repo}: {describe(e, args.hub_token)}")
    return problems


def _compare(trainer) -> list[str]:
    """Check the repo has every file of the output folder the final push sent; name the files it has beyond them
    (left as they are: they may be the user's own)."""
    args = trainer.args
    out = Path(args.output_dir)
    local = {
        p.relative_to(out).as_posix()
        for p in out.rglob("*")
        if p.is_file() and not p.relative_to(out).parts[0].startswith(("checkpoint-", "_"))
    }
    try:
        remote = set(HfApi().list_repo_files(trainer.hub_model_id, revision=args.hub_revision, token=args.hub_token))
    except HUB_ERRORS as e:
        return [f"could not list the repo to check it ({describe(e, args.hub_token)})"]
    missing = sorted(local - remote)
    extra = sorted(
        f for f in remote - local if f != ".gitattributes" and f.split("/")[0] != "last-checkpoint"
        and checkpoints.step(f.split("/")[0]) is None
    )  # fmt: skip
    if extra:
        logger.warning("Hub: %s also holds files this run did not write (left as they are): %s", trainer.hub_model_id,
                       ", ".join(extra[:10]))  # fmt: skip
    return [f"files missing from the repo: {', '.join(missing[:10])}"] if missing else []


def is_repo_id(value: str) -> bool:
    """Whether `resume_from_checkpoint` names a Hub repo rather than a local folder."""
    return bool(_REPO_ID.match(value)) and not Path(value).exists()


def find_checkpoint(recipe: Recipe, repo_id: str) -> tuple[str, int, dict]:
    """(folder, step, the repo's recipe.yaml keys) of the newest checkpoint an earlier run pushed to `repo_id`:
    `last-checkpoint` (hub_strategy checkpoint), else the highest `checkpoint-N` (all_checkpoints). Raises unless the
    repo's recipe.yaml describes the same run as this recipe, as for a local output_dir (compared again once the
    tokenizer is built). Writes nothing but temporary copies of two small files."""
    args = recipe.training
    fix = "name a repo an lm-recipes run pushed with hub_strategy: checkpoint or all_checkpoints"
    try:
        files = HfApi().list_repo_files(repo_id, revision=args.hub_revision, token=args.hub_token)
    except HUB_ERRORS as e:
        raise RecipeError(
            f"resume_from_checkpoint: {repo_id} is not a local folder, and as a Hub repo it cannot be read "
            f"({describe(e, args.hub_token)}); give a checkpoint folder, or check the repo id, token and network"
        ) from None
    folders = {f.split("/")[0] for f in files if "/" in f}
    numbered = checkpoints.numbered(list(folders))
    folder = "last-checkpoint" if "last-checkpoint" in folders else numbered[-1] if numbered else None
    if folder is None or "recipe.yaml" not in files or f"{folder}/trainer_state.json" not in files:
        raise RecipeError(f"resume_from_checkpoint: the Hub repo {repo_id} holds no checkpoint and recipe.yaml; {fix}")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for name in ("recipe.yaml", f"{folder}/trainer_state.json"):
                hf_hub_download(repo_id, name, revision=args.hub_revision, token=args.hub_token, local_dir=tmp)
        except HUB_ERRORS as e:
            raise RecipeError(
                f"resume_from_checkpoint: could not read {repo_id} ({describe(e, args.hub_token)})"
            ) from None
        saved = recipes.check_same(recipe, Path(tmp), where=f"the Hub repo {repo_id}")
        step = json.loads((Path(tmp) / folder / "trainer_state.json").read_text())["global_step"]
    return folder, step, saved


def download_checkpoint(recipe: Recipe, repo_id: str, folder: str, step: int) -> str:
    """`folder` of `repo_id` as output_dir/checkpoint-`step`, downloaded unless it is there already (as it is for
    the other processes of a run, once the main one has it); returns its path."""
    args = recipe.training
    target = Path(args.output_dir) / f"checkpoint-{step}"
    if target.exists():
        return str(target)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            snapshot_download(
                repo_id,
                revision=args.hub_revision,
                allow_patterns=[f"{folder}/*"],
                local_dir=tmp,
                token=args.hub_token,
            )
        except HUB_ERRORS as e:
            raise RecipeError(
                f"resume_from_checkpoint: could not download {folder} from {repo_id} ({describe(e, args.hub_token)})"
            ) from None
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(Path(tmp) / folder), target)
    logger.info("Hub: downloaded %s/%s (step %d) to %s", repo_id, folder, step, target)
    return str(target)
