"""Every kind of bad input: one clear message with the fix, exit status 2, nothing written."""

import pytest

from conftest import ROOT
from lm_recipes.cli import main

TINY = ["--num_layers", "1", "--num_heads", "2", "--hidden_size", "32", "--intermediate_size", "32",
        "--max_position_embeddings", "64", "--block_size", "64", "--vocab_size", "500"]  # fmt: skip


def files(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "small.txt").write_text("Only a few words here.\n\nAnd a few more.\n")
    (tmp_path / "d.jsonl").write_text('{"body": "Some text to learn from."}\n' * 20)


CASES = {
    "unknown key": (["--max_stpes", "5"], "unknown flag `--max_stpes`; did you mean `max_steps`?"),
    "wrong type": (["--max_steps", "five"], "max_steps: invalid int value: 'five'"),
    "wrong choice": (["--objective", "mlx"], "objective: invalid choice: 'mlx'"),
    "missing files": (["--train_files", "{tmp}/nothing/*.txt"], "train_files: no file matches `{tmp}/nothing/*.txt`"),
    "empty file": (["--train_files", "{tmp}/empty.txt"], "train_files: `{tmp}/empty.txt` is empty"),
    "text column": (["--train_files", "{tmp}/d.jsonl"], "text_column: `text` is not a column"),
    "block over positions": (["--block_size", "128"], "block_size: 128 tokens is more than the model's 64 positions"),
    "block over corpus": (["--train_files", "{tmp}/small.txt", "--validation_split_percentage", "0"],
                          "block_size: 64 tokens is more than the whole train split"),
    "vocab too small": (["--vocab_size", "4"], "vocab_size: 4 leaves no room beyond the special tokens"),
    "mlm with gpt2": (["--model_type", "gpt2"], "model_type: gpt2 cannot be trained with objective mlm"),
    "clm with bert": (["--objective", "clm", "--model_type", "bert"], "model_type: bert cannot be trained with"),
    "unknown play": (["--validation_plays", "hamlet", "macbth"], "validation_plays: ['macbth'] not in the embedded"),
    "unknown genre": (["--genres", "comedy"], "genres: ['comedy'] are not genres of the embedded corpus; choose from"),
    "genres of files": (["--genres", "comedies", "--train_files", "{tmp}/small.txt"],
                        "genres: picks plays of the embedded corpus only"),
    "label column": (["--objective", "classification", "--label_column", "genre"],
                     "label_column: `genre` is not a column of the training data; its columns are ['text', 'label', "),
    "no passage": (["--objective", "classification", "--passage_lines", "0"], "passage_lines: 0 must be at least 1"),
    "two tokenizers": (["--model_name_or_path", "{tmp}", "--tokenizer_name", "{tmp}"],
                       "tokenizer_name: a run from model_name_or_path uses that checkpoint's tokenizer"),
    "hub checkpoint offline": (["--resume_from_checkpoint", "someone/nothing"],
                               "resume_from_checkpoint: someone/nothing is not a local folder, and as a Hub repo it "
                               "cannot be read (OfflineModeIsEnabled"),
    "hub push offline": (["--push_to_hub", "true", "--hub_model_id", "someone/model"],
                         "push_to_hub: cannot create or reach the Hub repo someone/model (OfflineModeIsEnabled"),
}  # fmt: skip


@pytest.mark.parametrize("flags, message", CASES.values(), ids=CASES.keys())
def test_bad_input(tmp_path, capsys, cache_dir, flags, message):
    files(tmp_path)
    out = tmp_path / "out"
    argv = [str(ROOT / "recipes/mlm.yaml"), "--output_dir", str(out), "--cache_dir", cache_dir, *TINY]
    argv += [f.format(tmp=tmp_path) for f in flags]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error: the recipe cannot run" in err
    assert message.format(tmp=tmp_path) in err
    assert not out.exists()
