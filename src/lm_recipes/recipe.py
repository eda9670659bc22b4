"""Recipes: the arguments of one run (arguments.py), loaded from YAML and CLI flags and checked all at once.

A recipe's keys map onto four dataclasses through `transformers.HfArgumentParser`: the YAML file first, then
`--key value` flags after the recipe path override it. A recipe may name a parent (`base: mlm.yaml`) whose keys it
overrides. Every problem found is reported in one `RecipeError`.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

import yaml
from transformers import HfArgumentParser

from .arguments import (
    FROM_CHECKPOINT,
    DataArguments,
    ModelArguments,
    TokenizerArguments,
    TrainingArguments,
    WatchArguments,
)
from .checks import block_size_problem, check, ranges, shapes

__all__ = ["Recipe", "RecipeError", "block_size_problem", "check", "check_same", "load", "read", "save"]


class RecipeError(Exception):
    """A recipe or its data cannot run; the message names every problem and its fix."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(f"  - {p}" for p in self.problems))


@dataclass
class Recipe:
    tokenizer: TokenizerArguments
    data: DataArguments
    model: ModelArguments
    training: TrainingArguments
    watch: WatchArguments
    given: tuple[str, ...] = ()  # the keys the recipe file, its bases and the flags set, in their order

    def flat(self) -> dict:
        """The resolved recipe as flat keys, secrets redacted: what is printed and saved."""
        out = {}
        for part in (self.tokenizer, self.data, self.model):
            out.update(asdict(part))
        out.update(self.training.to_dict())
        out.update(asdict(self.watch))
        out.update(self.training.as_given)
        return out

    def identity(self, resolved: bool = True) -> dict:
        """The keys that decide what a checkpoint holds: resuming with other values would mix two runs.

        A trained tokenizer may hold fewer tokens than `vocab_size` asks (training.resolve writes the real size into
        the recipe); before it is built (`resolved=False`) that key is left out of the comparison.
        """
        keep = {}
        for part in (self.tokenizer, self.data, self.model):
            keep.update(asdict(part))
        for k in ("preprocessing_num_workers", "cache_dir", "overwrite_cache", "max_eval_samples", "prepared_dir"):
            keep.pop(k, None)
        if self.model.model_name_or_path:  # the checkpoint decides the architecture and tokenizer, not these keys
            for k in (*FROM_CHECKPOINT, *(f.name for f in fields(TokenizerArguments))):
                keep.pop(k, None)
        elif not resolved and self.tokenizer.tokenizer_name is None:
            keep.pop("vocab_size")
        keep["seed"] = self.training.seed
        return keep

    def changes(self) -> dict:
        """The keys the recipe (its bases, the flags) sets to something other than their default, as they run."""
        default = defaults()
        mine = plain(self.flat())
        skip = {"output_dir", "hub_token"}  # said on its own line, or secret
        return {k: mine[k] for k in dict.fromkeys(self.given) if k not in skip and plain(default.get(k)) != mine[k]}


DATACLASSES = (TokenizerArguments, DataArguments, ModelArguments, TrainingArguments, WatchArguments)


def defaults() -> dict:
    """Every recipe key's default value."""
    return {f.name: f.default_factory() if f.default_factory is not MISSING else f.default
            for cls in DATACLASSES for f in fields(cls) if f.init}  # fmt: skip


_ARGPARSE_PREFIX = re.compile(r"^argument --(\w+)(?:/--[\w-]+)*:")


class Parser(HfArgumentParser):
    """HfArgumentParser that raises RecipeError instead of exiting, so every problem can be collected and reported
    with the command's own usage line."""

    def error(self, message):
        raise RecipeError(message)


def build_parser() -> HfArgumentParser:
    return Parser(DATACLASSES, prog="train.py", usage="train.py RECIPE.yaml [--key value ...]")


def recipe_keys() -> list[str]:
    return [f.name for dc in DATACLASSES for f in fields(dc) if f.init]


def closest(key: str, keys: list[str], command: str = "train.py RECIPE") -> str:
    """The end of an unknown-key message: the closest valid key, or where the valid ones are listed."""
    match = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    return f"; did you mean `{match[0]}`?" if match else f"; see `{command} --help` for the valid keys"


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
    if os.path.isdir(path):
        raise RecipeError(f"recipe file {path} is a folder; pass a YAML file such as {os.path.join(path, 'mlm.yaml')}")
    if not os.path.isfile(path):
        raise RecipeError(f"recipe file {path} does not exist; pass a YAML file such as recipes/mlm.yaml")
    raw = parse_yaml(path, "recipe file ")
    raw = {} if raw is None else raw  # an empty file: every key at its default
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


class _UniqueKeys(yaml.SafeLoader):
    """yaml.SafeLoader refusing a key given twice in one mapping, which PyYAML would keep the last of silently."""

    def construct_mapping(self, node, deep=False):
        lines = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if isinstance(key, str) and key in lines:
                raise yaml.constructor.ConstructorError(
                    None, None, f"`{key}` is set twice (lines {lines[key]} and {line}); keep one", key_node.start_mark
                )
            lines[key] = line
        return super().construct_mapping(node, deep)


def parse_yaml(path: str | Path, what: str = ""):
    """The YAML in `path` (None when empty); RecipeError naming the file, and the line of a byte that is not UTF-8
    or of a syntax error."""
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise RecipeError(
            f"{what}{path} is not UTF-8 text (byte 0x{data[e.start]:02x} on line {line}: latin-1?); save it as "
            f"UTF-8, e.g. iconv -f latin1 -t utf-8"
        ) from None
    try:
        return yaml.load(text, Loader=_UniqueKeys)  # noqa: S506  (a SafeLoader)
    except yaml.YAMLError as e:
        why = " ".join(str(e).replace('in "<unicode string>", ', "").split())
        raise RecipeError(f"{what}{path} is not valid YAML: {why}") from None


def load(argv: list[str]) -> Recipe:
    """Parse `RECIPE.yaml [--key value ...]`: unknown keys, bad types and contradictions all reported at once."""
    if not argv or argv[0].startswith("-"):
        raise RecipeError("no recipe given; usage: train.py RECIPE.yaml [--key value ...], e.g. recipes/mlm.yaml")
    path, overrides = argv[0], argv[1:]
    raw, source = read(path)

    keys = recipe_keys()
    problems = [f"{source[k]}: unknown key `{k}`{closest(k, keys)}" for k in raw if k not in keys]
    # The annotations as written: HfArgumentParser rewrites some fields' `type` (dict -> str) when it is built.
    types = {k: str(v) for dc in DATACLASSES for c in reversed(dc.__mro__)
             for k, v in vars(c).get("__annotations__", {}).items()}  # fmt: skip
    misshapen = shapes({k: v for k, v in raw.items() if k in keys}, source, types)
    problems += misshapen
    bad = {p.split(": ")[1] for p in misshapen}
    argv_all = _to_argv({k: v for k, v in raw.items() if k in keys and k not in bad}) + list(overrides)

    # Each flag on its own first, so one bad value does not hide the others; the good ones are then parsed
    # together and checked across keys, and every problem found on the way is reported at once.
    parser = build_parser()
    good: list[str] = []
    for flag, values in _split_flags(argv_all):
        name = flag[2:] if flag.startswith("--") else flag
        if not flag.startswith("--") or name not in keys:
            problems.append(f"command line: unknown flag `{flag}`{closest(name, keys)}")
            continue
        # One value as --key=value: argparse would take `-1e-3` after a bare --key for a flag of its own.
        given = [f"{flag}={values[0]}"] if len(values) == 1 else [flag, *values]
        try:
            parser.parse_known_args(given)
            good += given
        except RecipeError as e:
            message = _ARGPARSE_PREFIX.sub(r"\1:", e.problems[0])
            if "Truthy value expected" in message:  # argparse's words for a bool that is not one
                message = f"{name}: {' '.join(values)} is not a boolean; use true or false"
            problems.append(message)
    # Values out of range first, in our words: the Trainer's arguments would stop at the first with their own.
    out_of_range = ranges(vars(parser.parse_known_args(good)[0]))
    problems += out_of_range
    try:
        tok, data, model, training, watch = parser.parse_args_into_dataclasses(args=good)
    except (ValueError, RecipeError) as e:
        raise RecipeError(problems if out_of_range else [*problems, str(e).strip()]) from None
    given = tuple(flag[2:] for flag, _ in _split_flags(good))
    recipe = Recipe(tok, data, model, training, watch, given)
    problems += check(recipe)
    if problems:
        raise RecipeError(problems)
    if "dataloader_num_workers" not in given and not data.streaming and training.device.type == "cuda":
        # A GPU otherwise waits each step while its own process collates (and masks) the next batch.
        training.dataloader_num_workers = 2
    return recipe


def check_same(
    recipe: Recipe, folder: Path, where: str | None = None, resolved: bool = False, saved: dict | None = None
) -> dict:
    """Raise unless the recipe.yaml in `folder` (or the `saved` keys read from one before) describes the same run:
    checkpoints of another would be mixed in. `resolved`: the recipe already holds what its tokenizer decided (see
    Recipe.identity). Returns the saved keys."""
    where = where or f"output_dir: {folder}"
    fix = "use another output_dir, or set resume_from_checkpoint: false to start over there (its checkpoints go)"
    if saved is None:
        saved_path = folder / "recipe.yaml"
        if not saved_path.is_file():
            raise RecipeError(f"{where} holds checkpoints without a recipe.yaml (not an lm-recipes run); {fix}")
        try:
            saved = parse_yaml(saved_path)
            why = None if isinstance(saved, dict) else f"it holds a {type(saved).__name__}, not `key: value` lines"
        except RecipeError as e:
            why = e.problems[0].removeprefix(f"{saved_path} ")
        if why:
            raise RecipeError(f"{where}: {saved_path} is not a valid saved recipe ({why}), so the run there cannot "
                              f"be checked or resumed; {fix}")  # fmt: skip
    here = plain(recipe.identity(resolved))
    # A key added to lm-recipes after the run was saved is not in its recipe.yaml: the run had that key's default.
    default = plain(defaults())
    saved = {**{k: default[k] for k in here if k not in saved and k in default}, **saved}
    changed = [f"{k}: {saved.get(k)!r} there, {v!r} here" for k, v in here.items() if saved.get(k) != v]
    if changed:
        raise RecipeError(f"{where} holds checkpoints of a different recipe ({'; '.join(changed)}); {fix}")
    return saved


def save(recipe: Recipe, output_dir: str) -> Path:
    """Write the resolved recipe beside the outputs (secrets redacted), so the run can be reproduced."""
    path = Path(output_dir) / "recipe.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# Resolved recipe: every key as it ran. Rerun it with: python scripts/train.py {path}\n"
    write_whole(path, header + dump(recipe))
    return path


def write_whole(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file renamed over it: a kill leaves the old file or the new one,
    never half of one (which a rerun would then have to read)."""
    staged = path.with_name(f".{path.name}.tmp")
    staged.write_text(text)
    os.replace(staged, path)


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


def print_help(argv: list[str] | None = None) -> None:
    """Every key with its meaning; with `RECIPE.yaml [--key value ...]`, the defaults shown are that recipe's values
    (its bases and the flags applied), so `--help` answers "what does this recipe run with?"."""
    parser = build_parser()
    argv = [a for a in argv or [] if a not in ("-h", "--help", "--plan")]
    if argv and not argv[0].startswith("-"):
        raw, _ = read(argv[0])
        values = {k: v for k, v in raw.items() if k in recipe_keys()}
        for flag, given in _split_flags(argv[1:]):
            if flag.startswith("--") and flag[2:] in recipe_keys():
                values[flag[2:]] = given[0] if len(given) == 1 else given
        parser.set_defaults(**values)
        parser.description = (
            f"The keys of a recipe. Each `(default: ...)` below is the value {argv[0]} runs with"
            f"{' with these flags' if len(argv) > 1 else ''}; keys it does not set show their defaults."
        )
    parser.print_help()
