"""Recipes: every shipped one is valid; bad keys, types and values are reported together, with the fix."""

from pathlib import Path

import pytest
import yaml

from lm_recipes import recipe as recipes
from lm_recipes.cli import main
from lm_recipes.recipe import RecipeError

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "recipes").glob("*.yaml"))


def write(tmp_path, text: str) -> str:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_recipe_loads(path):
    r = recipes.load([str(path)])
    assert r.model.objective in ("mlm", "clm", "classification")
    assert r.data.block_size <= r.model.max_position_embeddings
    assert r.training.lr_scheduler_type == "cosine_with_min_lr"
    assert r.training.lr_scheduler_kwargs == {"min_lr_rate": 0.1}
    assert not r.training.bf16 and not r.training.fp16  # precision auto on a CPU machine is fp32


def test_cli_flags_override_the_yaml():
    r = recipes.load([str(ROOT / "recipes/clm.yaml"), "--learning_rate", "1e-3", "--max_steps", "200"])
    assert r.training.learning_rate == 1e-3 and r.training.max_steps == 200


def test_unknown_key_names_the_closest_valid_one(tmp_path):
    path = write(tmp_path, "objective: mlm\noutput_dir: o\nlerning_rate: 1e-3\n")
    with pytest.raises(RecipeError, match="unknown key `lerning_rate`; did you mean `learning_rate`"):
        recipes.load([path])


def test_unknown_cli_flag_names_the_closest_valid_one():
    with pytest.raises(RecipeError, match="unknown flag `--block_sise`; did you mean `block_size`"):
        recipes.load([str(ROOT / "recipes/mlm.yaml"), "--block_sise", "64"])


def test_every_problem_is_reported_at_once(tmp_path):
    path = write(tmp_path, "objective: mlm\noutput_dir: o\nvocab_sise: 10\nlearning_rate: fast\nobjective2: x\n")
    with pytest.raises(RecipeError) as e:
        recipes.load([path])
    text = str(e.value)
    assert "vocab_sise" in text and "vocab_size" in text
    assert "learning_rate: invalid float value: 'fast'" in text
    assert "objective2" in text
    assert len(e.value.problems) == 3


def test_wrong_choice_lists_the_allowed_values(tmp_path):
    path = write(tmp_path, "objective: mlx\noutput_dir: o\n")
    allowed = r"\(choose from 'mlm', 'clm', 'classification'\)"
    with pytest.raises(RecipeError, match=r"objective: invalid choice: 'mlx' " + allowed):
        recipes.load([path])


@pytest.mark.parametrize(
    "text, message",
    [
        ("output_dir: o\n", "objective: missing; set `objective: mlm`"),
        ("objective: mlm\nmodel_type: gpt2\noutput_dir: o\n", "model_type: gpt2 cannot be trained with objective mlm"),
        ("objective: clm\nmodel_type: bert\noutput_dir: o\n", "model_type: bert cannot be trained with objective clm"),
        ("objective: clm\ntokenizer_type: wordpiece\noutput_dir: o\n", "tokenizer_type: wordpiece does not fit"),
        (
            "objective: mlm\nblock_size: 1024\nmax_position_embeddings: 512\noutput_dir: o\n",
            "block_size: 1024 tokens is more than the model's 512 positions",
        ),
        ("objective: mlm\nvocab_size: 5\noutput_dir: o\n", "vocab_size: 5 leaves no room beyond the special tokens"),
        ("objective: clm\nvocab_size: 200\noutput_dir: o\n", "vocab_size: 200 leaves no room beyond the special"),
        ("objective: mlm\nnum_heads: 3\noutput_dir: o\n", "num_heads: 3 must divide hidden_size 256"),
        ("- a\n- b\n", "must be a mapping"),
    ],
)
def test_contradictions_are_errors(tmp_path, text, message):
    with pytest.raises(RecipeError, match=message.replace("(", r"\(")):
        recipes.load([write(tmp_path, text)])


def test_missing_recipe_file():
    with pytest.raises(RecipeError, match="recipe file nowhere.yaml does not exist"):
        recipes.load(["nowhere.yaml"])


def test_precision_contradiction(tmp_path):
    with pytest.raises(RecipeError, match="precision: fp32 contradicts bf16/fp16"):
        recipes.load([write(tmp_path, "objective: mlm\noutput_dir: o\nprecision: fp32\nfp16: true\n")])


def test_saved_recipe_is_complete_reloads_and_hides_secrets(tmp_path):
    r = recipes.load([str(ROOT / "recipes/mlm.yaml"), "--hub_token", "hf_secret123", "--output_dir", str(tmp_path)])
    saved = recipes.save(r, str(tmp_path))
    text = saved.read_text()
    assert "hf_secret123" not in text and "hf_secret123" not in recipes.dump(r)
    flat = yaml.safe_load(text)
    assert set(recipes.recipe_keys()) - set(flat) <= {"hub_token"}  # every other key is there
    # Resolved for this machine when run, but saved as given: the recipe still fits a machine with a GPU.
    assert r.training.use_cpu and (flat["use_cpu"], flat["bf16"], flat["precision"]) == (False, False, "auto")
    again = recipes.load([str(saved)])
    assert again.identity() == r.identity()
    assert again.training.learning_rate == r.training.learning_rate


def test_help_lists_every_key_with_its_meaning(capsys):
    assert main([str(ROOT / "recipes/mlm.yaml"), "--help"]) == 0
    out = capsys.readouterr().out
    for key in ("--block_size", "--vocab_size", "--objective", "--learning_rate", "--precision", "--train_files"):
        assert key in out
    assert "Tokens per training block" in out


def test_main_exits_nonzero_with_one_clear_message(tmp_path, capsys):
    out_dir = tmp_path / "never"
    path = write(tmp_path, f"objective: mlm\noutput_dir: {out_dir}\nlearning_rat: 1\n")
    assert main([path]) == 2
    err = capsys.readouterr().err
    assert "error: the recipe cannot run" in err and "did you mean `learning_rate`" in err
    assert not out_dir.exists()


def test_base_chain_is_merged_and_overridden(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "grand.yaml").write_text("objective: mlm\noutput_dir: o\nnum_layers: 3\nvocab_size: 900\n")
    (tmp_path / "sub" / "parent.yaml").write_text("base: ../grand.yaml\nnum_layers: 2\nlearning_rate: 1e-4\n")
    child = tmp_path / "sub" / "child.yaml"
    child.write_text("base: parent.yaml\nlearning_rate: 3e-4\n")
    r = recipes.load([str(child), "--vocab_size", "1200"])
    assert (r.model.num_layers, r.training.learning_rate, r.tokenizer.vocab_size) == (2, 3e-4, 1200)
    # The saved recipe is flat and complete: it loads alone, with the same values.
    saved = yaml.safe_load(recipes.dump(r))
    assert "base" not in saved and saved["num_layers"] == 2 and saved["learning_rate"] == 3e-4
    again = recipes.load([str(recipes.save(r, str(tmp_path / "out")))])
    assert again.identity() == r.identity() and again.training.learning_rate == 3e-4


def test_base_unknown_key_names_the_file_it_is_in(tmp_path):
    (tmp_path / "parent.yaml").write_text("objective: mlm\noutput_dir: o\nnum_layer: 2\n")
    child = write(tmp_path, "base: parent.yaml\n")
    with pytest.raises(RecipeError, match=r"parent.yaml: unknown key `num_layer`; did you mean `num_layers`"):
        recipes.load([child])


def test_base_cycle_and_missing_base_are_clear_errors(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\nobjective: mlm\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(RecipeError, match=r"base: the recipes form a cycle \(.*a.yaml -> .*b.yaml -> .*a.yaml\)"):
        recipes.load([str(tmp_path / "a.yaml")])
    missing = write(tmp_path, "base: nowhere.yaml\nobjective: mlm\n")
    with pytest.raises(RecipeError, match="base: nowhere.yaml does not exist .* relative to the recipe's folder"):
        recipes.load([missing])


def test_a_child_recipe_can_put_a_parent_key_back_to_its_default(tmp_path):
    # The README's own-domain example: genres (embedded corpus only) is dropped for local files.
    path = write(tmp_path, f"base: {ROOT / 'recipes/clm-continue.yaml'}\ngenres: null\ntrain_files: d/*.txt\n")
    r = recipes.load([path])
    assert r.data.genres is None and r.data.train_files == ["d/*.txt"]
    assert r.model.model_name_or_path == "outputs/clm" and r.training.max_steps == 150


def test_a_run_saved_before_a_key_existed_resumes_with_that_keys_default(tmp_path):
    # An output_dir (or prepared folder) made by a release without whole_word_mask: its recipe.yaml lacks the key.
    from lm_recipes import prepared_data

    r = recipes.load([str(ROOT / "recipes/mlm.yaml")])
    older = {k: v for k, v in recipes.plain(r.identity(False)).items() if k != "whole_word_mask"}
    recipes.check_same(r, tmp_path, saved=older)  # the default, false, is what that run had
    on = recipes.load([str(ROOT / "recipes/mlm.yaml"), "--whole_word_mask", "true"])
    with pytest.raises(RecipeError, match="whole_word_mask: False there, True here"):
        recipes.check_same(on, tmp_path, saved=older)
    # A prepared folder's keys (and the name hashed from them) leave the key out at its default, as before it existed.
    assert "whole_word_mask" not in prepared_data.keys(r)
    assert prepared_data.keys(on)["whole_word_mask"] is True
