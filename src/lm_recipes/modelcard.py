"""The model card: README.md of an output folder (and of its Hub repo): what was trained, on what, with which
recipe, what it reached, and how to load it."""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from . import corpus, hub
from . import recipe as recipes
from .recipe import Recipe
from .tasks import TASKS

_TEMPLATE = Path(__file__).parent / "templates" / "modelcard.md"


def write(trainer, recipe: Recipe) -> Path:
    """README.md for the repo: what was trained, on what, with which recipe, and what it reached."""
    args, d, m = recipe.training, recipe.data, recipe.model
    task = TASKS[m.objective]
    out = Path(args.output_dir)
    results_path = out / "all_results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    shown = {k: v for k, v in results.items() if k in ("eval_loss", "eval_perplexity", "eval_accuracy",
                                                        "eval_macro_f1", "train_loss")}  # fmt: skip
    model = trainer.model
    start = m.model_name_or_path
    from_hub = bool(start) and hub.is_repo_id(start)
    data = {
        "embedded": d.uses_embedded_corpus(),
        "dataset_name": d.dataset_name,
        "dataset_config_name": d.dataset_config_name,
        "train_files": [Path(f).name for f in d.train_files or []],
        # With `genres`, only the held-out plays of those genres are validated on.
        "validation_plays": [p for p in d.validation_plays if not d.genres or corpus.plays().get(p) in d.genres],
        "genres": d.genres,
    }
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag=task.pipeline,
        tags=["lm-recipes", m.objective, model.config.model_type],
        datasets=[d.dataset_name] if d.dataset_name else None,
        base_model=start if from_hub else None,
        model_name=trainer.hub_model_id or out.name,
    )
    card = ModelCard.from_template(
        card_data,
        template_path=str(_TEMPLATE),
        repo_id=trainer.hub_model_id or out.name,
        architecture=type(model).__name__,
        parameters=f"{model.num_parameters():,}",
        objective=m.objective,
        start=start,
        labels=list(model.config.id2label.values()) if task.labelled else None,
        data=data,
        steps=trainer.state.global_step,
        tokens=trainer.state.num_input_tokens_seen or None,
        results=shown,
        recipe=recipes.dump(recipe),
        pipeline=task.pipeline,
        # What loads the model as this card is read: the Hub id once pushed, else the folder as the run named it.
        load_from=trainer.hub_model_id if args.push_to_hub and trainer.hub_model_id else args.output_dir,
    )
    path = out / "README.md"
    card.save(path)
    return path
