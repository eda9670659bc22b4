"""Reuse: continued pretraining and genre classification from a pretraining run's output, through train.py."""

import json
from collections import Counter

import pytest
import yaml
from transformers import AutoConfig, AutoTokenizer, pipeline

from conftest import PRETRAIN, ROOT
from lm_recipes import corpus, data, labels
from lm_recipes import recipe as recipes


@pytest.fixture
def pretrained(trained):
    """pretrained(objective): the output folder of a short tiny pretraining run, shared by the session."""
    return lambda objective: trained(objective, *PRETRAIN)[0]


# The fine-tuning runs take the tiny pretrained model's size from its checkpoint; these keep them quick.
QUICK = ["--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "32", "--logging_steps", "5",
         "--disable_tqdm", "true", "--block_size", "64", "--warmup_steps", "0"]  # fmt: skip


@pytest.mark.parametrize("objective", ["mlm", "clm"])
def test_continued_pretraining_reuses_the_checkpoint_and_its_tokenizer(train, pretrained, objective):
    start = pretrained(objective)
    run = train(f"{objective}-continue.yaml", *QUICK, "--model_name_or_path", str(start), "--max_steps", "10",
                "--eval_steps", "10", "--save_steps", "10", "--max_eval_samples", "16")  # fmt: skip
    assert f"Using the tokenizer of {start} (not retraining one)" in run.out
    assert "Training a" not in run.out and "Reusing the tokenizer trained" not in run.out
    assert f"starting from {start}" in run.out  # model: BertForMaskedLM, starting from ...
    before, after = (json.loads((d / "tokenizer.json").read_text()) for d in (start, run.output_dir))
    assert before["model"]["vocab"] == after["model"]["vocab"]
    # Only comedies were read: the training split has the other comedies, validation the held-out one.
    assert "validation: 18 documents" in run.out  # the scenes of twelfth-night
    saved = yaml.safe_load((run.output_dir / "recipe.yaml").read_text())
    assert "base" not in saved and saved["genres"] == ["comedies"] and saved["model_name_or_path"] == str(start)
    assert saved["hidden_size"] == 64 and saved["num_layers"] == 2  # the checkpoint's, not mlm.yaml's 256 and 4
    assert run.state()["global_step"] == 10


def test_genre_classifier_from_a_pretrained_mlm(train, pretrained):
    start = pretrained("mlm")
    # Two genres whose passages a tiny model tells apart within a test's budget (histories speak of kings and wars).
    run = train("finetune-genre.yaml", *QUICK, "--model_name_or_path", str(start), "--genres", "comedies",
                "histories", "--passage_lines", "8", "--per_device_train_batch_size", "32", "--learning_rate", "1e-3",
                "--max_steps", "150", "--eval_steps", "75", "--save_steps", "75",
                "--max_eval_samples", "300")  # fmt: skip
    assert f"Using the tokenizer of {start} (not retraining one)" in run.out and "Training a" not in run.out
    results = json.loads((run.output_dir / "all_results.json").read_text())
    # The held-out passages it was scored on (a seeded sample of 300 of twelfth-night's and richard-ii's) and the
    # accuracy of always answering their commonest genre:
    recipe = recipes.load([str(run.output_dir / "recipe.yaml")])
    texts, _ = labels.encode_labels(data.load_texts(recipe.data, recipe.training.seed, labelled=True), "label")
    counts = Counter(data.first(texts["validation"], recipe.data, "validation", recipe.training.seed)["label"])
    majority = max(counts.values()) / sum(counts.values())
    assert sum(counts.values()) == 300 and results["eval_accuracy"] > majority + 0.1, (results, counts)
    assert "eval_perplexity" not in results  # not a language model's loss
    evals = [h for h in run.state()["log_history"] if "eval_accuracy" in h]
    assert [h["step"] for h in evals] == [75, 150, 150]  # every eval_steps, then the final evaluation
    config = AutoConfig.from_pretrained(run.output_dir)
    assert list(config.id2label.values()) == ["comedies", "histories"]
    assert type(config).__name__ == "BertConfig" and config.architectures == ["BertForSequenceClassification"]
    predicted = pipeline("text-classification", model=str(run.output_dir))("Now is the winter of our discontent")
    assert predicted[0]["label"] in ("comedies", "histories")
    assert AutoTokenizer.from_pretrained(run.output_dir).vocab == AutoTokenizer.from_pretrained(start).vocab
    again = recipes.load([str(run.output_dir / "recipe.yaml")])  # the saved recipe, the checkpoint's keys in it, runs
    assert again.model.hidden_size == 64 and again.tokenizer.tokenizer_type == "auto"


def test_genre_classifier_recipe_from_the_causal_run(train, pretrained):
    # recipes/finetune-genre-clm.yaml: the genre task of finetune-genre.yaml on the causal recipe's output, a GPT-2
    # body under a new head, with the causal run's tokenizer (no WordPiece trained for the inherited tokenizer_type).
    assert recipes.load([str(ROOT / "recipes/finetune-genre-clm.yaml")]).model.model_name_or_path == "outputs/clm"
    start = pretrained("clm")
    run = train("finetune-genre-clm.yaml", *QUICK, "--model_name_or_path", str(start), "--genres", "comedies",
                "histories", "--max_steps", "10", "--eval_steps", "10", "--save_steps", "10",
                "--max_eval_samples", "32")  # fmt: skip
    assert f"Using the tokenizer of {start} (not retraining one)" in run.out and "Training a" not in run.out
    assert f"model: GPT2ForSequenceClassification, starting from {start}" in run.out
    config = AutoConfig.from_pretrained(run.output_dir)
    assert config.architectures == ["GPT2ForSequenceClassification"] and config.n_embd == 64
    assert config.pad_token_id == AutoTokenizer.from_pretrained(run.output_dir).pad_token_id
    assert list(config.id2label.values()) == ["comedies", "histories"]
    predicted = pipeline("text-classification", model=str(run.output_dir))("Now is the winter of our discontent")
    assert predicted[0]["label"] in ("comedies", "histories")
    assert yaml.safe_load((run.output_dir / "recipe.yaml").read_text())["output_dir"] == str(run.output_dir)


@pytest.mark.parametrize("model_type, head", [("gpt2", "GPT2ForSequenceClassification"),
                                              ("llama", "LlamaForSequenceClassification")])  # fmt: skip
def test_causal_classifier_from_random_weights_with_a_causal_runs_tokenizer(train, pretrained, tmp_path, model_type,
                                                                            head):  # fmt: skip
    # The random start that bench/finetune.py sets beside a causal pretraining run: finetune-genre.yaml without its
    # checkpoint, the causal architecture, and the run's byte-level BPE tokenizer. The recipe inherits mlm.yaml's
    # `tokenizer_type: wordpiece`, which says what tokenizer to train, so it must not refuse a tokenizer it is given.
    start = pretrained("clm")
    recipe = tmp_path / "random.yaml"
    recipe.write_text(yaml.safe_dump({
        "base": str(ROOT / "recipes" / "finetune-genre.yaml"), "model_name_or_path": None,
        "tokenizer_name": str(start), "model_type": model_type, "num_layers": 2, "num_heads": 2, "hidden_size": 64,
        "intermediate_size": 128, "max_position_embeddings": 64, "dropout": 0.0, "attention_dropout": 0.0,
    }))  # fmt: skip
    run = train(str(recipe), *QUICK, "--genres", "comedies", "histories", "--max_steps", "10", "--eval_steps", "10",
                "--save_steps", "10", "--max_eval_samples", "32")  # fmt: skip
    assert f"Using the tokenizer {start}" in run.out and "Training a" not in run.out
    config = AutoConfig.from_pretrained(run.output_dir)
    assert config.model_type == model_type and config.architectures == [head]
    vocab = AutoTokenizer.from_pretrained(start).get_vocab()
    assert AutoTokenizer.from_pretrained(run.output_dir).get_vocab() == vocab
    assert list(config.id2label.values()) == ["comedies", "histories"]


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_classifier_on_local_labelled_files(train, pretrained, tmp_path, suffix):
    # A task a classifier can learn in a few steps: each line opens with its label's word.
    lines = [line for p in corpus.passages(corpus.read_play("macbeth"), 2)[:60] for line in p.splitlines()]
    rows = [{"sentence": f"{'Alas' if i % 2 else 'Hark'}, {line}", "mood": "dark" if i % 2 else "light"}
            for i, line in enumerate(lines)]  # fmt: skip
    for name, part in (("train", rows[:90]), ("dev", rows[90:])):
        path = tmp_path / f"{name}.{suffix}"
        if suffix == "csv":
            import csv

            with path.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=["sentence", "mood"])
                writer.writeheader()
                writer.writerows(part)
        else:
            path.write_text("".join(json.dumps(r) + "\n" for r in part))
    run = train("finetune-genre.yaml", *QUICK, "--model_name_or_path", str(pretrained("mlm")),
                "--train_files", str(tmp_path / f"train.{suffix}"),
                "--validation_files", str(tmp_path / f"dev.{suffix}"),
                "--text_column", "sentence", "--label_column", "mood", "--max_steps", "50", "--eval_steps", "50",
                "--save_steps", "50", "--learning_rate", "3e-3")  # fmt: skip
    config = AutoConfig.from_pretrained(run.output_dir)
    assert config.id2label == {0: "dark", 1: "light"}
    results = json.loads((run.output_dir / "all_results.json").read_text())
    assert results["eval_accuracy"] >= 0.9 and results["eval_macro_f1"] >= 0.9, results  # the two classes: half each


def test_missing_label_column_is_refused_before_writing(train, pretrained, tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "Some text here.", "tag": "x"}\n' * 20)
    run = train("finetune-genre.yaml", *QUICK, "--model_name_or_path", str(pretrained("mlm")),
                "--train_files", str(tmp_path / "d.jsonl"), check=False)  # fmt: skip
    assert run.returncode == 2
    assert "label_column: `label` is not a column of the training data; its columns are ['text', 'tag']" in run.out
    assert not run.output_dir.exists()
