"""Recipes: the typed arguments of one run, loaded from YAML and CLI flags, checked all at once.

A recipe's keys map onto four dataclasses through `transformers.HfArgumentParser`: the YAML file first, then
`--key value` flags after the recipe path override it. A recipe may name a parent (`base: mlm.yaml`) whose keys it
overrides. Every problem found is reported in one `RecipeError`.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal

import yaml
from transformers import HfArgumentParser
from transformers import TrainingArguments as HfTrainingArguments

# Held out of every default recipe, one play per genre, so the genre task tests on plays no model has seen.
VALIDATION_PLAYS = ("hamlet", "twelfth-night", "richard-ii", "the-tempest", "julius-caesar", "measure-for-measure")
# The architectures each objective can build from scratch; the first is what `model_type: auto` picks.
ARCHITECTURES = {"mlm": ("bert",), "clm": ("gpt2",), "classification": ("bert", "gpt2")}
# Model keys that a starting checkpoint decides: with model_name_or_path they are read from its config instead.
FROM_CHECKPOINT = (
    "model_type", "num_layers", "num_heads", "hidden_size", "intermediate_size", "max_position_embeddings"
)  # fmt: skip


class RecipeError(Exception):
    """A recipe or its data cannot run; the message names every problem and its fix."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(f"  - {p}" for p in self.problems))


@dataclass
class TokenizerArguments:
    """How the tokenizer is made: trained on the training split, or loaded."""

    tokenizer_name: str | None = field(
        default=None,
        metadata={"help": "An existing tokenizer (local folder or Hub id) to use instead of training one."},
    )
    tokenizer_type: Literal["auto", "wordpiece", "bpe"] = field(
        default="auto",
        metadata={"help": "Tokenizer to train: wordpiece (BERT) or byte-level bpe (GPT-2); auto follows model_type."},
    )
    vocab_size: int = field(default=8000, metadata={"help": "Vocabulary size in tokens, special tokens included."})
    min_frequency: int = field(default=2, metadata={"help": "Occurrences a merge or word piece needs to be learned."})
    lowercase: bool = field(default=True, metadata={"help": "Lowercase text before WordPiece (BERT uncased)."})


@dataclass
class DataArguments:
    """Where the text comes from and how it becomes fixed-length blocks."""

    dataset_name: str | None = field(default=None, metadata={"help": "A Hub dataset id, loaded with load_dataset."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "The Hub dataset's configuration."})
    train_files: list[str] | None = field(
        default=None, metadata={"help": "Local training files: path, glob or list (txt, json, jsonl, csv, parquet)."}
    )
    validation_files: list[str] | None = field(
        default=None, metadata={"help": "Local validation files, as train_files; without them, one is carved."}
    )
    text_column: str = field(default="text", metadata={"help": "The column that holds the text of each document."})
    label_column: str = field(
        default="label", metadata={"help": "classification only: the column of labels (class names or ids)."}
    )
    sample_by: Literal["line", "paragraph", "document"] = field(
        default="paragraph", metadata={"help": "What one document of a txt file is: a line, a paragraph or the file."}
    )
    validation_plays: list[str] = field(
        default_factory=lambda: list(VALIDATION_PLAYS),
        metadata={"help": "Embedded corpus only: plays held out whole for validation (file names without .md)."},
    )
    genres: list[str] | None = field(
        default=None,
        metadata={"help": "Embedded corpus only: keep only the plays of these genres (comedies, histories, ...)."},
    )
    passage_lines: int = field(
        default=4, metadata={"help": "Embedded genre task (classification): lines of speech per passage."}
    )
    validation_split_percentage: float = field(
        default=5.0, metadata={"help": "Percent of training documents carved out for validation when there is none."}
    )
    block_size: int = field(
        default=128,
        metadata={"help": "Tokens per training block (mlm, clm) or most tokens per example (classification)."},
    )
    mlm_probability: float = field(default=0.15, metadata={"help": "MLM only: fraction of tokens masked (80/10/10)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only the first N training blocks."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep only the first N validation blocks."})
    preprocessing_num_workers: int | None = field(
        default=None, metadata={"help": "Processes for tokenization (datasets.map num_proc); none: one process."}
    )
    cache_dir: str | None = field(default=None, metadata={"help": "datasets cache folder; none: HF_DATASETS_CACHE."})
    overwrite_cache: bool = field(default=False, metadata={"help": "Redo tokenization instead of using the cache."})

    def uses_embedded_corpus(self) -> bool:
        return self.dataset_name is None and not self.train_files


@dataclass
class ModelArguments:
    """What is trained: the objective and the model's size, or a checkpoint to start from."""

    objective: Literal["mlm", "clm", "classification"] | None = field(
        default=None,
        metadata={
            "help": "Training objective: mlm (masked, BERT), clm (causal, GPT-2) or classification (labelled "
            "text, usually from a pretrained model_name_or_path). Required."
        },
    )
    model_type: Literal["auto", "bert", "gpt2"] = field(
        default="auto",
        metadata={"help": "Architecture built from scratch: bert (mlm, classification), gpt2 (clm, classification)."},
    )
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Start from this checkpoint (folder or Hub id) instead of from scratch."}
    )
    num_layers: int = field(default=4, metadata={"help": "Transformer layers."})
    num_heads: int = field(default=4, metadata={"help": "Attention heads per layer; must divide hidden_size."})
    hidden_size: int = field(default=256, metadata={"help": "Width of the residual stream (embedding size)."})
    intermediate_size: int = field(default=1024, metadata={"help": "Width of each feed-forward layer."})
    max_position_embeddings: int = field(default=512, metadata={"help": "Positions the model has, in tokens."})
    dropout: float = field(default=0.1, metadata={"help": "Dropout on embeddings and residual branches."})
    attention_dropout: float = field(default=0.1, metadata={"help": "Dropout on attention probabilities."})

    @property
    def resolved_model_type(self) -> str | None:
        if self.model_type != "auto":
            return self.model_type
        return ARCHITECTURES.get(self.objective, (None,))[0]


@dataclass
class TrainingArguments(HfTrainingArguments):
    """The Trainer's own arguments, plus the precision to pick for the hardware."""

    precision: Literal["auto", "bf16", "fp16", "fp32"] = field(
        default="auto",
        metadata={"help": "auto: bf16 where the GPU supports it, else fp16 on CUDA, fp32 on CPU."},
    )

    def __post_init__(self):
        # Keys resolved for this machine below are saved as given, so a saved recipe still fits another machine.
        self.as_given = {k: getattr(self, k) for k in ("use_cpu", "bf16", "fp16", "dataloader_pin_memory")}
        if not self.use_cpu and not _has_accelerator():
            # Say so explicitly: under `accelerate launch --multi_gpu` on a machine without one, transformers
            # only sets up its CPU process group (gloo) when use_cpu is set.
            self.use_cpu = True
        if self.precision == "auto" and not (self.bf16 or self.fp16):
            self.bf16, self.fp16 = _auto_precision(self.use_cpu)
        elif self.precision in ("bf16", "fp16"):
            if getattr(self, "fp16" if self.precision == "bf16" else "bf16"):
                raise ValueError(f"precision: {self.precision} contradicts bf16/fp16; keep only `precision`")
            self.bf16, self.fp16 = self.precision == "bf16", self.precision == "fp16"
        elif self.precision == "fp32" and (self.bf16 or self.fp16):
            raise ValueError("precision: fp32 contradicts bf16/fp16; keep only `precision`")
        if not _has_cuda():
            self.dataloader_pin_memory = False  # pinning only helps copies to a CUDA device
        super().__post_init__()

    def __getstate__(self):
        # The Trainer pickles its arguments into training_args.bin beside the model, which is pushed with it.
        return {**self.__dict__, "hub_token": None}


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _has_accelerator() -> bool:
    """A GPU or other device torch can train on (CUDA, ROCm, MPS, XPU, ...)."""
    import torch

    return torch.accelerator.is_available()


def _auto_precision(use_cpu: bool) -> tuple[bool, bool]:
    """(bf16, fp16) for this machine: bf16 on GPUs that support it, else fp16 on CUDA, fp32 on CPU."""
    import torch

    if use_cpu or not _has_cuda():
        return False, False
    # Native bf16 only (Ampere and newer): torch also says yes for GPUs that merely emulate it (V100, T4), where
    # bf16 is slower than fp16.
    if torch.cuda.is_bf16_supported(including_emulation=False):
        return True, False
    return False, True


@dataclass
class Recipe:
    tokenizer: TokenizerArguments
    data: DataArguments
    model: ModelArguments
    training: TrainingArguments

    def flat(self) -> dict:
        """The resolved recipe as flat keys, secrets redacted: what is printed and saved."""
        out = {}
        for part in (self.tokenizer, self.data, self.model):
            out.update(asdict(part))
        out.update(self.training.to_dict())
        out.update(self.training.as_given)
        return out

    def identity(self) -> dict:
        """The keys that decide what a checkpoint holds: resuming with other values would mix two runs."""
        keep = {}
        for part in (self.tokenizer, self.data, self.model):
            keep.update(asdict(part))
        for k in ("preprocessing_num_workers", "cache_dir", "overwrite_cache", "max_eval_samples"):
            keep.pop(k, None)
        if self.model.model_name_or_path:  # the checkpoint decides the architecture and tokenizer, not these keys
            for k in (*FROM_CHECKPOINT, *(f.name for f in fields(TokenizerArguments))):
                keep.pop(k, None)
        keep["seed"] = self.training.seed
        return keep


DATACLASSES = (TokenizerArguments, DataArguments, ModelArguments, TrainingArguments)


_ARGPARSE_PREFIX = re.compile(r"^argument --(\w+)(?:/--[\w-]+)*:")


class _Parser(HfArgumentParser):
    """HfArgumentParser that raises instead of exiting, so every problem can be collected."""

    def error(self, message):
        raise RecipeError(message)


def build_parser() -> HfArgumentParser:
    return _Parser(DATACLASSES, prog="train.py", usage="train.py RECIPE.yaml [--key value ...]")


def recipe_keys() -> list[str]:
    return [f.name for dc in DATACLASSES for f in fields(dc) if f.init]


def _close(key: str, keys: list[str]) -> str:
    match = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    return f"; did you mean `{match[0]}`?" if match else "; see `train.py RECIPE --help` for the valid keys"


def _to_argv(raw: dict) -> list[str]:
    """YAML values as the CLI flags HfArgumentParser reads, so both go through the same types and checks."""
    argv = []
    for key, value in raw.items():
        if value is None or value == []:
            continue  # null and [] keep the default
        if isinstance(value, dict):
            argv += [f"--{key}", json.dumps(value)]
        elif isinstance(value, list):
            argv += [f"--{key}", *(str(v) for v in value)]
        elif isinstance(value, bool):
            argv += [f"--{key}", str(value).lower()]
        else:
            argv += [f"--{key}", str(value)]
    return argv


def _split_flags(argv: list[str]) -> list[tuple[str, list[str]]]:
    """[("--key", [values...]), ...] for checking each flag on its own."""
    groups: list[tuple[str, list[str]]] = []
    for token in argv:
        if token.startswith("--"):
            name, eq, value = token.partition("=")
            groups.append((name, [value] if eq else []))
        elif groups:
            groups[-1][1].append(token)
        else:
            groups.append((token, []))
    return groups


def read(path: str, _chain: tuple[str, ...] = ()) -> tuple[dict, dict[str, str]]:
    """The recipe's raw keys with its `base` chain merged in (the recipe wins over its parents), and for each key
    the file it came from. A `base` is resolved relative to the folder of the recipe that names it."""
    real = os.path.realpath(path)
    if real in _chain:
        cycle = " -> ".join(os.path.relpath(p) for p in (*_chain, real))
        raise RecipeError(f"base: the recipes form a cycle ({cycle}); remove the `base` key from one of them")
    if not os.path.isfile(path):
        raise RecipeError(f"recipe file {path} does not exist; pass a YAML file such as recipes/mlm.yaml")
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as e:
        raise RecipeError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path} must be a mapping of `key: value` lines, not a {type(raw).__name__}")
    merged, source = {}, {}
    base = raw.pop("base", None)
    if base is not None:
        if not isinstance(base, str):
            raise RecipeError(f"{path}: base: must name one recipe file (e.g. `base: mlm.yaml`), not {base!r}")
        parent = os.path.join(os.path.dirname(path), base)
        if not os.path.isfile(parent):
            raise RecipeError(
                f"{path}: base: {base} does not exist (looked for {parent}); a base is relative to the recipe's folder"
            )
        merged, source = read(parent, (*_chain, real))
    merged.update(raw)
    source.update(dict.fromkeys(raw, path))
    return merged, source


def load(argv: list[str]) -> Recipe:
    """Parse `RECIPE.yaml [--key value ...]`: unknown keys, bad types and contradictions all reported at once."""
    if not argv or argv[0].startswith("-"):
        raise RecipeError("no recipe given; usage: train.py RECIPE.yaml [--key value ...], e.g. recipes/mlm.yaml")
    path, overrides = argv[0], argv[1:]
    raw, source = read(path)

    keys = recipe_keys()
    problems = [f"{source[k]}: unknown key `{k}`{_close(k, keys)}" for k in raw if k not in keys]
    argv_all = _to_argv({k: v for k, v in raw.items() if k in keys}) + list(overrides)

    # Each flag on its own first, so one bad value does not hide the others; the good ones are then parsed
    # together and checked across keys, and every problem found on the way is reported at once.
    parser = build_parser()
    good: list[str] = []
    for flag, values in _split_flags(argv_all):
        name = flag[2:] if flag.startswith("--") else flag
        if not flag.startswith("--") or name not in keys:
            problems.append(f"command line: unknown flag `{flag}`{_close(name, keys)}")
            continue
        try:
            parser.parse_known_args([flag, *values])
            good += [flag, *values]
        except RecipeError as e:
            problems.append(_ARGPARSE_PREFIX.sub(r"\1:", e.problems[0]))
    try:
        tok, data, model, training = parser.parse_args_into_dataclasses(args=good)
    except (ValueError, RecipeError) as e:
        raise RecipeError([*problems, str(e).strip()]) from None
    recipe = Recipe(tok, data, model, training)
    problems += check(recipe)
    if problems:
        raise RecipeError(problems)
    return recipe


def check(recipe: Recipe) -> list[str]:
    """Problems across keys, found before anything is loaded or written."""
    t, d, m = recipe.tokenizer, recipe.data, recipe.model
    problems = []
    if m.objective is None:
        problems.append(
            "objective: missing; set `objective: mlm` (BERT), `objective: clm` (GPT-2) or `objective: classification`"
        )
    model_type = m.resolved_model_type
    allowed = ARCHITECTURES.get(m.objective, ())
    if m.objective and m.model_type != "auto" and m.model_type not in allowed:
        problems.append(
            f"model_type: {m.model_type} cannot be trained with objective {m.objective}; "
            f"use model_type: {' or '.join(allowed)} (or auto), or objective: "
            f"{'mlm' if m.model_type == 'bert' else 'clm'}"
        )
    wanted_tok = {"bert": "wordpiece", "gpt2": "bpe"}
    if t.tokenizer_type != "auto" and model_type and wanted_tok[model_type] != t.tokenizer_type:
        problems.append(
            f"tokenizer_type: {t.tokenizer_type} does not fit model_type {model_type}; "
            f"use tokenizer_type: {wanted_tok[model_type]} (or auto)"
        )
    if m.model_name_or_path is None:
        if m.num_heads < 1 or m.hidden_size % m.num_heads:
            problems.append(f"num_heads: {m.num_heads} must divide hidden_size {m.hidden_size}")
        for key in ("num_layers", "hidden_size", "intermediate_size", "max_position_embeddings"):
            if getattr(m, key) < 1:
                problems.append(f"{key}: must be a positive number of {'layers' if key == 'num_layers' else 'units'}")
        if d.block_size > m.max_position_embeddings:
            problems.append(
                f"block_size: {d.block_size} tokens is more than the model's {m.max_position_embeddings} positions; "
                f"lower block_size or raise max_position_embeddings"
            )
    for key in ("dropout", "attention_dropout", "mlm_probability"):
        part = m if hasattr(m, key) else d
        if not 0 <= getattr(part, key) < 1:
            problems.append(f"{key}: {getattr(part, key)} must be in [0, 1)")
    if d.block_size < 2:
        problems.append(f"block_size: {d.block_size} must be at least 2 tokens")
    if t.tokenizer_name is None and m.model_name_or_path is None:
        special = 5 if model_type == "bert" else 2
        floor = special + (256 if model_type == "gpt2" else 0)
        if t.vocab_size < floor + 1:
            what = "the special tokens and the 256 byte symbols" if model_type == "gpt2" else "the special tokens"
            problems.append(
                f"vocab_size: {t.vocab_size} leaves no room beyond {what} ({floor} tokens); "
                f"raise it (8000 is a good start for a small corpus)"
            )
    if not 0 <= d.validation_split_percentage < 100:
        problems.append("validation_split_percentage: must be a percent in [0, 100)")
    if d.dataset_name and d.train_files:
        problems.append("dataset_name and train_files are both set; keep one source of training text")
    if d.validation_files and not d.train_files:
        problems.append("validation_files needs train_files; set train_files too, or drop validation_files")
    if d.passage_lines < 1:
        problems.append(f"passage_lines: {d.passage_lines} must be at least 1 line")
    if d.genres and not d.uses_embedded_corpus():
        problems.append("genres: picks plays of the embedded corpus only; drop it, or drop dataset_name/train_files")
    return problems


def check_same(recipe: Recipe, folder: Path, where: str | None = None) -> None:
    """Raise unless the recipe.yaml in `folder` describes the same run: checkpoints of another would be mixed in."""
    where = where or f"output_dir: {folder}"
    fix = "use another output_dir, or set resume_from_checkpoint: false to start over there (its checkpoints go)"
    saved_path = folder / "recipe.yaml"
    if not saved_path.is_file():
        raise RecipeError(f"{where} holds checkpoints without a recipe.yaml (not an lm-recipes run); {fix}")
    saved = yaml.safe_load(saved_path.read_text()) or {}
    here = plain(recipe.identity())
    changed = [f"{k}: {saved.get(k)!r} there, {v!r} here" for k, v in here.items() if saved.get(k) != v]
    if changed:
        raise RecipeError(f"{where} holds checkpoints of a different recipe ({'; '.join(changed)}); {fix}")


def save(recipe: Recipe, output_dir: str) -> Path:
    """Write the resolved recipe beside the outputs (secrets redacted), so the run can be reproduced."""
    path = Path(output_dir) / "recipe.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# Resolved recipe: every key as it ran. Rerun it with: python scripts/train.py {path}\n"
    path.write_text(header + dump(recipe))
    return path


def dump(recipe: Recipe) -> str:
    flat = recipe.flat()
    # Drop keys whose value cannot be given back as a recipe value (the Trainer fills these in itself).
    flat = {k: v for k, v in flat.items() if not (isinstance(v, str) and v.startswith("<") and v.endswith(">"))}
    return yaml.safe_dump(plain(flat), sort_keys=False, allow_unicode=True)


def plain(value):
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def print_help() -> None:
    build_parser().print_help()
