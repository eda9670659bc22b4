"""Every kind of bad input: one clear message with the fix, exit status 2, nothing written."""

import json
import os
import shutil
import subprocess

import pytest
from datasets import Dataset
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

from conftest import ROOT
from lm_recipes import corpus
from lm_recipes import tokenizer as tokenizers
from lm_recipes.arguments import TokenizerArguments
from lm_recipes.cli import main

TINY = ["--num_layers", "1", "--num_heads", "2", "--hidden_size", "32", "--intermediate_size", "32",
        "--max_position_embeddings", "64", "--block_size", "64", "--vocab_size", "500"]  # fmt: skip
SCENES = [doc["text"] for doc in corpus.generate_documents(["macbeth"], corpus.version())]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A tiny saved masked LM with its WordPiece tokenizer, and a byte-level BPE tokenizer without a padding token
    (as the Hub's gpt2 has none), both trained by the package's own tokenizer code on one play."""
    root = tmp_path_factory.mktemp("made")
    texts = Dataset.from_dict({"text": SCENES})
    args = TokenizerArguments(vocab_size=400)
    for kind in ("wordpiece", "bpe"):
        tok = tokenizers.wrap(tokenizers.train(args, kind, texts, "text"), kind, args, 64)
        if kind == "bpe":
            tok.pad_token = None
        tok.save_pretrained(root / kind)
    config = BertConfig(vocab_size=400, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)  # fmt: skip
    BertForMaskedLM(config).save_pretrained(root / "model")
    AutoTokenizer.from_pretrained(root / "wordpiece").save_pretrained(root / "model")
    return root


def files(tmp_path, made):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "blank.txt").write_text("\n\n  \n\n")
    (tmp_path / "small.txt").write_text("Only a few words here.\n\nAnd a few more.\n")
    (tmp_path / "d.jsonl").write_text('{"body": "Some text to learn from."}\n' * 20)
    # Recipe files
    (tmp_path / "latin.yaml").write_bytes("objective: mlm\n# café\n".encode("latin-1"))
    (tmp_path / "recipes").mkdir()
    (tmp_path / "syntax.yaml").write_text("objective: mlm\nlearning_rate: 1e-3\n  block_size: 64\n")
    (tmp_path / "twice.yaml").write_text("objective: mlm\nlearning_rate: 1e-3\nblock_size: 64\nlearning_rate: 2e-3\n")
    (tmp_path / "blank.yaml").write_text("")
    (tmp_path / "types.yaml").write_text("objective: mlm\nlearning_rate: [1, 2]\nblock_size: {a: 1}\n")
    (tmp_path / "scalar.yaml").write_text("just some words\n")
    # Output folders
    (tmp_path / "a-file").write_text("not a folder")
    saved = {"bad-yaml": b"objective: [mlm\n", "list": b"- a\n- b\n", "latin": b"seed: 4\n# caf\xe9\n"}
    for name, text in saved.items():
        (tmp_path / name / "checkpoint-5").mkdir(parents=True)
        (tmp_path / name / "checkpoint-5" / "trainer_state.json").write_text("{}")
        (tmp_path / name / "recipe.yaml").write_bytes(text)
    # Data files
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("Some words.\n")
    (tmp_path / "latin.txt").write_bytes("hello\nworld\ncafé ok\n".encode("latin-1"))
    (tmp_path / "binary.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00")
    (tmp_path / "latin.jsonl").write_bytes('{"text": "a"}\n{"text": "café"}\n'.encode("latin-1"))
    (tmp_path / "latin.csv").write_bytes("text\nhello\ncafé\n".encode("latin-1"))
    (tmp_path / "broken.jsonl").write_text('{"text": "a"}\n{"text": "b"\n')
    (tmp_path / "arrays.jsonl").write_text('{"text": "a"}\n[1, 2]\n')
    (tmp_path / "broken.csv").write_text('text,n\n"a,1\nb,2,3\n')
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    (tmp_path / "numbers.jsonl").write_text('{"text": 5}\n' * 30)
    (tmp_path / "good.jsonl").write_text('{"text": "some words here"}\n' * 30)
    (tmp_path / "nulls.jsonl").write_text('{"text": "some words here"}\n' * 30 + '{"text": null}\n')
    (tmp_path / "lacking.jsonl").write_text('{"text": "some words here"}\n' * 30 + '{"other": 1}\n')
    (tmp_path / "one.txt").write_text("Just one document of words.\n")
    # Checkpoints and tokenizers
    model = made / "model"
    for name in ("truncated", "no-config", "bad-config", "no-weights", "no-tokenizer"):
        shutil.copytree(model, tmp_path / name)
    weights = tmp_path / "truncated" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    (tmp_path / "no-config" / "config.json").unlink()
    (tmp_path / "bad-config" / "config.json").write_text('{"model_type": "bert",')
    (tmp_path / "no-weights" / "model.safetensors").unlink()
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        (tmp_path / "no-tokenizer" / name).unlink(missing_ok=True)


# (flags, the message's fragment). A first flag that is no `--key` is the recipe instead of recipes/mlm.yaml. The
# tiny model and `--output_dir {tmp}/out` come before the flags, which override them.
CASES = {
    # recipe keys and values
    "unknown key": (["--max_stpes", "5"], "unknown flag `--max_stpes`; did you mean `max_steps`?"),
    "wrong type": (["--max_steps", "five"], "max_steps: invalid int value: 'five'"),
    "wrong choice": (["--objective", "mlx"], "objective: invalid choice: 'mlx'"),
    "unknown attention": (["--attn_implementation", "flash"], "attn_implementation: invalid choice: 'flash'"),
    "tf32 on a CPU": (["--tf32", "true"], "--tf32 requires Ampere or a newer GPU arch"),
    "not a bool": (["--lowercase", "maybe"], "lowercase: maybe is not a boolean; use true or false"),
    "block over positions": (["--block_size", "128"], "block_size: 128 tokens is more than the model's 64 positions"),
    "vocab too small": (["--vocab_size", "4"], "vocab_size: 4 leaves no room beyond the special tokens"),
    "mlm with gpt2": (["--model_type", "gpt2"], "model_type: gpt2 cannot be trained with objective mlm"),
    "clm with bert": (["--objective", "clm", "--model_type", "bert"], "model_type: bert cannot be trained with"),
    "mlm with llama": (["--model_type", "llama"], "model_type: llama cannot be trained with objective mlm; use "
                       "model_type: bert or modernbert (or auto), or objective: clm"),
    "clm with modernbert": (["--objective", "clm", "--model_type", "modernbert"], "model_type: modernbert cannot be "
                            "trained with objective clm; use model_type: gpt2 or llama (or auto), or objective: mlm"),
    "rotary odd head size": (["--model_type", "modernbert", "--hidden_size", "66", "--num_heads", "2"],
                             "num_heads: modernbert rotates pairs of each head's 33 dimensions"),
    "llama with dropout": (["{root}/recipes/clm.yaml", "--model_type", "llama"],
                           "dropout: 0.1 cannot apply to model_type llama"),
    "whole words for clm": (["{root}/recipes/clm.yaml", "--whole_word_mask", "true"],
                            "whole_word_mask: masks words for objective mlm only, not clm"),
    "modernbert with bpe": (["--model_type", "modernbert", "--tokenizer_type", "bpe"],
                            "tokenizer_type: bpe does not fit model_type modernbert; use tokenizer_type: wordpiece"),
    "no passage": (["--objective", "classification", "--passage_lines", "0"], "passage_lines: 0 must be at least 1"),
    "two tokenizers": (["--model_name_or_path", "{tmp}/model", "--tokenizer_name", "{tmp}/model"],
                       "tokenizer_name: a run from model_name_or_path uses that checkpoint's tokenizer"),
    "learning rate 0": (["--learning_rate", "0"], "learning_rate: 0.0 must be above 0 (the peak step size"),
    "negative learning rate": (["--learning_rate", "-1e-3"], "learning_rate: -0.001 must be above 0"),
    "train batch 0": (["--per_device_train_batch_size", "0"],
                      "per_device_train_batch_size: 0 must be at least 1 (blocks per device in each micro-batch)"),
    "eval batch 0": (["--per_device_eval_batch_size", "0"], "per_device_eval_batch_size: 0 must be at least 1"),
    "accumulation 0": (["--gradient_accumulation_steps", "0"],
                       "gradient_accumulation_steps: 0 must be at least 1 (micro-batches per optimizer step)"),
    "max_steps 0": (["--max_steps", "0"], "max_steps: 0 optimizer steps trains nothing; give a positive number"),
    "max_steps -5": (["--max_steps", "-5"], "max_steps: -5 optimizer steps trains nothing"),
    "no epochs": (["--max_steps", "-1", "--num_train_epochs", "0"], "num_train_epochs: 0.0 passes over the training"),
    "logging_steps 0": (["--logging_steps", "0"], "logging_steps: 0.0 must be above 0 (optimizer steps between logs"),
    "eval_steps 0": (["--eval_steps", "0"], "eval_steps: 0.0 must be above 0 (optimizer steps between evaluations"),
    "save_steps -1": (["--save_steps", "-1"], "save_steps: -1.0 must be above 0 (optimizer steps between checkpoints"),
    "keep no checkpoint": (["--save_total_limit", "0"], "save_total_limit: 0 must be at least 1 (checkpoints kept"),
    "negative warmup": (["--warmup_steps", "-1"], "warmup_steps: -1.0 must be at least 0 (optimizer steps of linear"),
    "no train samples": (["--max_train_samples", "0"], "max_train_samples: 0 must be at least 1 (training blocks"),
    "no eval samples": (["--max_eval_samples", "0"], "max_eval_samples: 0 must be at least 1 (validation blocks"),
    "no workers": (["--preprocessing_num_workers", "0"], "preprocessing_num_workers: 0 must be at least 1"),
    "min_frequency 0": (["--min_frequency", "0"], "min_frequency: 0 must be at least 1 (occurrences"),
    "negative clipping": (["--max_grad_norm", "-1"], "max_grad_norm: -1.0 must be at least 0"),
    "negative decay": (["--weight_decay", "-0.01"], "weight_decay: -0.01 must be at least 0"),
    "mask nothing": (["--mlm_probability", "0"], "mlm_probability: 0.0 must be in (0, 1) (the fraction of tokens"),
    "mask everything": (["--mlm_probability", "1"], "mlm_probability: 1.0 must be in (0, 1)"),
    "dropout 1": (["--dropout", "1"], "dropout: 1.0 must be in [0, 1)"),
    "negative attention dropout": (["--attention_dropout", "-0.1"], "attention_dropout: -0.1 must be in [0, 1)"),
    "adam_beta2 1": (["--adam_beta2", "1"], "adam_beta2: 1.0 must be in [0, 1)"),
    "carve everything": (["--validation_split_percentage", "100"], "validation_split_percentage: 100.0 must be a"),
    "all at once": (["--learning_rate", "0", "--max_steps", "0", "--warmup_steps", "-1"],
                    "learning_rate: 0.0 must be above 0 (the peak step size of the optimizer, e.g. 5e-4)\n"
                    "  - warmup_steps: -1.0 must be at least 0"),
    # recipe files
    "not utf-8 recipe": (["{tmp}/latin.yaml"], "recipe file {tmp}/latin.yaml is not UTF-8 text (byte 0xe9 on line 2"),
    "recipe folder": (["{tmp}/recipes"], "recipe file {tmp}/recipes is a folder; pass a YAML file such as"),
    "yaml syntax": (["{tmp}/syntax.yaml"], "{tmp}/syntax.yaml is not valid YAML: mapping values are not allowed here "
                    "line 3, column 13"),
    "key twice": (["{tmp}/twice.yaml"], "`learning_rate` is set twice (lines 2 and 4); keep one"),
    "empty recipe": (["{tmp}/blank.yaml"], "objective: missing; set `objective: mlm`"),
    "list for a number": (["{tmp}/types.yaml"], "{tmp}/types.yaml: learning_rate: [1, 2] is a list; give one value"),
    "mapping for a number": (["{tmp}/types.yaml"], "block_size: {{'a': 1}} is a mapping; give one value"),
    "scalar recipe": (["{tmp}/scalar.yaml"], "must be a mapping of `key: value` lines, not a str"),
    # output folders
    "output_dir a file": (["--output_dir", "{tmp}/a-file"], "output_dir: {tmp}/a-file is a file, not a folder"),
    "output_dir under a file": (["--output_dir", "{tmp}/a-file/run"],
                                "output_dir: {tmp}/a-file/run is under {tmp}/a-file, which is a file"),
    "saved recipe not yaml": (["--output_dir", "{tmp}/bad-yaml"],
                              "output_dir: {tmp}/bad-yaml: {tmp}/bad-yaml/recipe.yaml is not a valid saved recipe "
                              "(is not valid YAML"),
    "saved recipe a list": (["--output_dir", "{tmp}/list"],
                            "recipe.yaml is not a valid saved recipe (it holds a list, not `key: value` lines), so "
                            "the run there cannot be checked or resumed; use another output_dir, or set "
                            "resume_from_checkpoint: false"),
    "saved recipe not utf-8": (["--output_dir", "{tmp}/latin"],
                               "{tmp}/latin/recipe.yaml is not a valid saved recipe (is not UTF-8 text (byte 0xe9 on "
                               "line 2"),
    # data files and columns
    "missing files": (["--train_files", "{tmp}/nothing/*.txt"], "train_files: no file matches `{tmp}/nothing/*.txt`"),
    "empty file": (["--train_files", "{tmp}/empty.txt"], "train_files: `{tmp}/empty.txt` is empty"),
    "unknown extension": (["--train_files", "{tmp}/syntax.yaml"], "train_files: cannot read ['.yaml'] files"),
    "mixed formats": (["--train_files", "{tmp}/small.txt", "{tmp}/d.jsonl"], "train_files: mixes ['.jsonl', '.txt']"),
    "train_files a folder": (["--train_files", "{tmp}/data"],
                             "train_files: `{tmp}/data` is a folder; name its files with a glob, e.g. "
                             "{tmp}/data/*.txt"),
    "validation_files a folder": (["--train_files", "{tmp}/small.txt", "--validation_files", "{tmp}/data"],
                                  "validation_files: `{tmp}/data` is a folder"),
    "latin-1 txt": (["--train_files", "{tmp}/latin.txt"],
                    "train_files: {tmp}/latin.txt is not UTF-8 text (byte 0xe9 on line 3: latin-1?); convert it, "
                    "e.g. iconv -f latin1 -t utf-8"),
    "binary txt": (["--train_files", "{tmp}/binary.txt"],
                   "train_files: {tmp}/binary.txt is not UTF-8 text (byte 0x89 on line 1: a binary file?)"),
    "latin-1 jsonl": (["--train_files", "{tmp}/latin.jsonl"],
                      "train_files: {tmp}/latin.jsonl is not UTF-8 text (byte 0xe9 on line 2"),
    "latin-1 csv": (["--train_files", "{tmp}/latin.csv"], "train_files: {tmp}/latin.csv is not UTF-8 text (byte 0xe9"),
    "latin-1 validation": (["--train_files", "{tmp}/small.txt", "--validation_files", "{tmp}/latin.txt"],
                           "validation_files: {tmp}/latin.txt is not UTF-8 text (byte 0xe9 on line 3"),
    "bad jsonl line": (["--train_files", "{tmp}/broken.jsonl"],
                       "train_files: {tmp}/broken.jsonl line 2 is not valid JSON (Expecting ',' delimiter"),
    "jsonl line not an object": (["--train_files", "{tmp}/arrays.jsonl"],
                                 "train_files: {tmp}/arrays.jsonl line 2 is a JSON list, not an object"),
    "malformed csv": (["--train_files", "{tmp}/broken.csv"],
                      "train_files: {tmp}/broken.csv line 3 has 1 fields, the header has 2"),
    "corrupt parquet": (["--train_files", "{tmp}/broken.parquet"],
                        "train_files: {tmp}/broken.parquet is not a parquet file, or a damaged one"),
    "text column": (["--train_files", "{tmp}/d.jsonl"], "text_column: `text` is not a column"),
    "text column of validation": (["--train_files", "{tmp}/good.jsonl", "--validation_files", "{tmp}/d.jsonl"],
                                  "validation_files: {tmp}/d.jsonl has the columns ['body'], {tmp}/good.jsonl has "
                                  "['text']; give every file the same columns"),
    "files of other columns": (["--train_files", "{tmp}/good.jsonl", "{tmp}/d.jsonl"],
                               "train_files: {tmp}/d.jsonl has the columns ['body']"),
    "numbers for text": (["--train_files", "{tmp}/numbers.jsonl"],
                         "text_column: `text` of train_files of {tmp}/numbers.jsonl holds int64, not text"),
    "null text": (["--train_files", "{tmp}/nulls.jsonl", "--validation_split_percentage", "0"],
                  "text_column: 1 of 31 rows of train_files have no `text` (null or missing), the first is row 31 of "
                  "{tmp}/nulls.jsonl"),
    "null text in validation": (["--train_files", "{tmp}/good.jsonl", "--validation_files", "{tmp}/nulls.jsonl"],
                                "text_column: 1 of 31 rows of validation_files have no `text`"),
    "rows lacking the column, jsonl": (["--train_files", "{tmp}/lacking.jsonl", "--validation_split_percentage", "0"],
                                       "text_column: 1 of 31 rows of train_files have no `text`"),
    "one document to carve": (["--train_files", "{tmp}/one.txt"],
                              "validation_split_percentage: 5.0% of 1 training document(s) leaves none to train on"),
    "block over corpus": (["--train_files", "{tmp}/small.txt", "--validation_split_percentage", "0"],
                          "block_size: 64 tokens is more than the whole train split"),
    "unknown play": (["--validation_plays", "hamlet", "macbth"], "validation_plays: ['macbth'] not in the embedded"),
    "unknown genre": (["--genres", "comedy"], "genres: ['comedy'] are not genres of the embedded corpus; choose from"),
    "genres of files": (["--genres", "comedies", "--train_files", "{tmp}/small.txt"],
                        "genres: picks plays of the embedded corpus only"),
    "label column": (["--objective", "classification", "--label_column", "genre"],
                     "label_column: `genre` is not a column of the training data; its columns are ['text', 'label', "),
    # checkpoints and tokenizers
    "checkpoint path missing": (["--model_name_or_path", "{tmp}/nowhere/run"],
                                "model_name_or_path: {tmp}/nowhere/run does not exist, and is not a Hub id"),
    "checkpoint a file": (["--model_name_or_path", "{tmp}/a-file"], "model_name_or_path: {tmp}/a-file is a file"),
    "checkpoint without config": (["--model_name_or_path", "{tmp}/no-config"],
                                  "model_name_or_path: {tmp}/no-config holds no config.json"),
    "checkpoint config not json": (["--model_name_or_path", "{tmp}/bad-config"],
                                   "model_name_or_path: {tmp}/bad-config/config.json is not a valid model config"),
    "checkpoint without weights": (["--model_name_or_path", "{tmp}/no-weights"],
                                   "model_name_or_path: {tmp}/no-weights holds no model weights (model.safetensors)"),
    "truncated safetensors": (["--model_name_or_path", "{tmp}/truncated"],
                              "model_name_or_path: {tmp}/truncated/model.safetensors is truncated or corrupt ("),
    "checkpoint without tokenizer": (["--model_name_or_path", "{tmp}/no-tokenizer"],
                                     "model_name_or_path: {tmp}/no-tokenizer holds no tokenizer"),
    "tokenizer folder without tokenizer": (["--tokenizer_name", "{tmp}/data"],
                                           "tokenizer_name: {tmp}/data holds no tokenizer"),
    "tokenizer path missing": (["--tokenizer_name", "./no/such/tokenizer"],
                               "tokenizer_name: ./no/such/tokenizer does not exist, and is not a Hub id"),
    "clm tokenizer without eos": (["{root}/recipes/clm.yaml", "--tokenizer_name", "{tmp}/wordpiece", "--train_files",
                                   "{tmp}/small.txt"],
                                  "tokenizer_name: the tokenizer of {tmp}/wordpiece has no end-of-text token"),
    "mlm tokenizer without mask": (["--tokenizer_name", "{tmp}/bpe", "--train_files", "{tmp}/small.txt"],
                                   "tokenizer_name: the tokenizer of {tmp}/bpe has no mask token"),
    # checkpoints to resume from
    "resume from a folder that is no checkpoint": (["--resume_from_checkpoint", "{tmp}/data"],
                                                   "resume_from_checkpoint: {tmp}/data cannot be resumed from: it is "
                                                   "not a checkpoint folder"),
    "resume from a checkpoint cut short": (["--resume_from_checkpoint", "{tmp}/model"],
                                           "resume_from_checkpoint: {tmp}/model cannot be resumed from: it has no "
                                           "trainer_state.json: its save was cut short"),
    "resume from a file": (["--resume_from_checkpoint", "{tmp}/small.txt"],
                           "resume_from_checkpoint: {tmp}/small.txt is not a checkpoint folder"),
    "resume from the last of none": (["--resume_from_checkpoint", "true"],
                                     "resume_from_checkpoint: true but {tmp}/out has no checkpoint-* folder"),
    # the Hub, offline
    "hub checkpoint offline": (["--resume_from_checkpoint", "someone/nothing"],
                               "resume_from_checkpoint: someone/nothing is not a local folder, and as a Hub repo it "
                               "cannot be read (OfflineModeIsEnabled"),
    "hub push offline": (["--push_to_hub", "true", "--hub_model_id", "someone/model"],
                         "push_to_hub: cannot create or reach the Hub repo someone/model (OfflineModeIsEnabled"),
    # streaming and prepared data
    "streaming without max_steps": (["--streaming", "true", "--max_steps", "-1"],
                                    "max_steps: a streamed run has no length"),
    "streaming files without validation": (["--streaming", "true", "--max_steps", "5", "--train_files",
                                            "{tmp}/good.jsonl"],
                                           "streaming: train_files give no validation set"),
    "validation_documents without streaming": (["--validation_documents", "5"],
                                               "validation_documents: applies to streaming only"),
    "streaming with loader workers": (["--streaming", "true", "--max_steps", "5", "--dataloader_num_workers", "2"],
                                      "dataloader_num_workers: a stream is read in the training process"),
    "streaming cut to samples": (["--streaming", "true", "--max_steps", "5", "--max_train_samples", "10"],
                                 "max_train_samples: a stream is not cut to N blocks"),
    "streaming a classifier": (["{root}/recipes/finetune-genre.yaml", "--streaming", "true", "--max_steps", "5"],
                               "streaming: classification reads its labelled examples whole"),
    "streaming from the Hub offline": (["--streaming", "true", "--max_steps", "5", "--dataset_name",
                                        "someone/nothing"],
                                       "dataset_name: could not load `someone/nothing`"),
    "streaming a blank file": (["--streaming", "true", "--max_steps", "5", "--train_files", "{tmp}/blank.txt",
                                "--eval_strategy", "no"],
                               "streaming: the stream gives no tokenizer documents"),
    "streaming a column that is not there": (["--streaming", "true", "--max_steps", "5", "--train_files",
                                              "{tmp}/d.jsonl", "--validation_documents", "3"],
                                             "text_column: `text` is not a column of the training stream"),
    "streaming numbers as text": (["--streaming", "true", "--max_steps", "5", "--train_files", "{tmp}/numbers.jsonl",
                                   "--validation_documents", "3"],
                                  "text_column: `text` of the stream holds int values such as 5, not text"),
    "streaming an unknown play": (["--streaming", "true", "--max_steps", "5", "--validation_plays", "nosuchplay"],
                                  "validation_plays: ['nosuchplay'] not in the embedded corpus"),
    "prepared_dir never prepared": (["--prepared_dir", "{tmp}/data"],
                                    "prepared_dir: {tmp}/data holds no prepared data; make it with"),
}  # fmt: skip


def snapshot(folder) -> dict:
    return {p: p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("flags, message", CASES.values(), ids=CASES.keys())
def test_bad_input(tmp_path, capsys, cache_dir, made, flags, message):
    files(tmp_path, made)
    for name in ("model", "wordpiece", "bpe"):
        shutil.copytree(made / name, tmp_path / name)
    before = snapshot(tmp_path)
    out = tmp_path / "out"
    flags = [f.format(tmp=tmp_path, root=ROOT) for f in flags]
    recipe = flags.pop(0) if not flags[0].startswith("--") else str(ROOT / "recipes/mlm.yaml")
    argv = [recipe, "--output_dir", str(out), "--cache_dir", cache_dir, *TINY, *flags]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error: the recipe cannot run" in err and "Traceback" not in err
    assert message.format(tmp=tmp_path) in err
    assert not out.exists()
    assert snapshot(tmp_path) == before  # nothing written, an existing output_dir's files the same bytes


def test_an_output_dir_that_cannot_be_written_is_refused_first(tmp_path, capsys):
    """As root, permissions do not stop writes: a read-only mount does."""
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() == 0:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(locked)],
                                 capture_output=True)  # fmt: skip
        if mounted.returncode != 0:
            pytest.skip(f"running as root, where only a read-only mount stops writes, and mount failed: "
                        f"{mounted.stderr.decode().strip()}")  # fmt: skip
    else:
        locked.chmod(0o555)
    try:
        argv = [str(ROOT / "recipes/mlm.yaml"), "--output_dir", str(locked / "run"), *TINY]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"output_dir: {locked}/run cannot be written in {locked}, where it would be made" in err
        assert not (locked / "run").exists()
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(locked)], check=True)
        else:
            locked.chmod(0o755)


def test_clm_trains_with_a_tokenizer_that_has_no_padding_token(tmp_path, cache_dir, made):
    """Blocks are all block_size long: nothing needs padding, in training, evaluation or samples."""
    (tmp_path / "plays.txt").write_text("\n\n".join(SCENES))
    assert AutoTokenizer.from_pretrained(made / "bpe").pad_token is None
    out = tmp_path / "out"
    argv = [str(ROOT / "recipes/clm.yaml"), "--output_dir", str(out), "--cache_dir", cache_dir, *TINY,
            "--tokenizer_name", str(made / "bpe"), "--train_files", str(tmp_path / "plays.txt"), "--max_steps", "3",
            "--eval_steps", "2", "--save_strategy", "no", "--per_device_train_batch_size", "4",
            "--max_eval_samples", "8", "--sample_max_new_tokens", "4", "--report_to", "none", "--plots", "false",
            "--warmup_steps", "0"]  # fmt: skip
    assert main(argv) == 0
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 3 and any("eval_loss" in h for h in state["log_history"])
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert samples and all(s for s in samples)
    assert AutoTokenizer.from_pretrained(out).pad_token is None  # the saved tokenizer is the one given
