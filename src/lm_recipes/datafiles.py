"""Local data files: the paths and globs of train_files / validation_files, what is wrong with files that cannot be
read (the file, the line, the encoding), and text columns that hold no text.

The diagnosis of a file runs only after `load_dataset` failed on it, so reading good files costs nothing more.
"""

from __future__ import annotations

import csv
import glob
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset

from .recipe import RecipeError

CONVERT = "convert it, e.g. iconv -f latin1 -t utf-8 FILE > FILE.utf8"


def expand(key: str, patterns: list[str]) -> list[str]:
    """The files `patterns` name, in order; RecipeError for a pattern that matches nothing or only folders, and for
    an empty file."""
    files = []
    for pattern in patterns:
        path = os.path.expanduser(pattern)
        matched = sorted(glob.glob(path, recursive=True))
        if not matched:
            raise RecipeError(f"{key}: no file matches `{pattern}`; check the path (globs like data/*.txt work)")
        found = [f for f in matched if os.path.isfile(f)]
        if not found:
            folder = matched[0]
            raise RecipeError(
                f"{key}: `{folder}` is a folder; name its files with a glob, e.g. {os.path.join(folder, '*.txt')}"
            )
        files += found
    for f in files:
        if os.path.getsize(f) == 0:
            raise RecipeError(f"{key}: `{f}` is empty; remove it from {key} or give it text")
    return files


def diagnose(key: str, files: list[str], builder: str) -> str | None:
    """Why `load_dataset(builder)` could not read `files`: the first file at fault, with its line and the fix; None
    when no file shows a problem of its own."""
    for f in files:
        problem = _not_utf8(f) if builder != "parquet" else None
        if problem is None and builder == "json":
            problem = _bad_json(f)
        elif problem is None and builder == "csv":
            problem = _bad_csv(f)
        elif problem is None and builder == "parquet":
            problem = _bad_parquet(f)
        if problem:
            return f"{key}: {f} {problem}"
    return None


def columns_problem(data_files: dict[str, list[str]], columns) -> str | None:
    """The first file whose columns differ from the first file's (`columns(file)` reads them): files that cannot
    make one table."""
    first = None
    for split, files in data_files.items():
        for f in files:
            mine = columns(f)
            if first is None:
                first = (f, mine)
            elif sorted(mine) != sorted(first[1]):
                return (f"{split}_files: {f} has the columns {mine}, {first[0]} has {first[1]}; give every file the "
                        f"same columns")  # fmt: skip
    return None


def _not_utf8(path: str) -> str | None:
    """Where `path` stops being UTF-8 text. Lines are split on b"\\n", which no multi-byte UTF-8 character holds."""
    with open(path, "rb") as f:
        binary = b"\0" in f.read(8192)
        f.seek(0)
        for n, line in enumerate(f, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as e:
                guess = "a binary file?" if binary else "latin-1?"
                return f"is not UTF-8 text (byte 0x{line[e.start]:02x} on line {n}: {guess}); {CONVERT}"
    return None


def _bad_json(path: str) -> str | None:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        json.loads(text)
        return None  # one JSON document: the library's message says what it did not like in it
    except ValueError:
        pass
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            return f"line {n} is not valid JSON ({e.msg} at column {e.colno}); one JSON object per line is expected"
        if not isinstance(row, dict):
            return f'line {n} is a JSON {type(row).__name__}, not an object ({{"text": ...}}) as every line must be'
    return None


def _bad_csv(path: str) -> str | None:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader, [])
            for row in reader:
                if row and len(row) != len(header):
                    return (f"line {reader.line_num} has {len(row)} fields, the header has {len(header)}; quote "
                            f"fields that hold commas (\"a, b\")")  # fmt: skip
        except csv.Error as e:
            return f"line {reader.line_num} is not valid csv ({e})"
    return None


def _bad_parquet(path: str) -> str | None:
    try:
        pq.read_metadata(path)
    except (pa.ArrowException, OSError) as e:
        return f"is not a parquet file, or a damaged one ({e}); write it again"
    return None


def text_problem(ds: Dataset, column: str, where: str, files: list[str] | None = None) -> str | None:
    """A text column that holds no text: another type, nulls (rows without it), or bytes that are not UTF-8.
    `where` names the data ("train_files", "the validation split of dataset_name ..."), `files` its files."""
    feature = ds.features[column]
    kind = getattr(feature, "dtype", type(feature).__name__)
    if kind not in ("string", "large_string"):
        return (f"text_column: `{column}` of {where}{_in(files)} holds {kind}, not text; point text_column at the "
                f"column of text, or write the values as strings")  # fmt: skip
    values = ds.data.column(column)
    if values.null_count:
        first = next(i for i, v in enumerate(values.is_null().to_pylist()) if v)
        return (f"text_column: {values.null_count} of {len(ds)} rows of {where} have no `{column}` (null or "
                f"missing), the first is row {first + 1}{_in(files)}; give every row its text, or leave those rows "
                f"out")  # fmt: skip
    try:
        values.validate(full=True)
    except pa.ArrowInvalid:
        for f in files or []:
            if problem := _not_utf8(f):
                return f"{where}: {f} {problem}"
        return f"text_column: `{column}` of {where} holds bytes that are not UTF-8 text; {CONVERT}"
    return None


def _in(files: list[str] | None) -> str:
    if not files:
        return ""
    return f" of {', '.join(files)}" if len(files) <= 3 else f" of {len(files)} files ({files[0]}, ...)"
