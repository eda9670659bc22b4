"""The real-size recipes (GPT-2 small, BERT-base) as users take them to a GPU node: offline here, their Hub data is
swapped for the embedded corpus (kept streamed), and the model is the recipe's own size. `--plan` prints numbers a
test can recompute from the architecture, and two training steps of the 100M-parameter model run on this CPU."""

import re

import pytest

from conftest import ROOT

# Per layer: attention (qkv and output projections) + feed-forward + two LayerNorms, each weight with its bias.
H, L, FF = 768, 12, 3072
LAYER = (H * 3 * H + 3 * H) + (H * H + H) + (H * FF + FF) + (FF * H + H) + 4 * H
SIZES = {  # recipe -> (parameters but the token embeddings, parameters per token, tokens per step on 8 GPUs, steps)
    # GPT-2: 1,024 positions and the final LayerNorm; the LM head is tied to the token embeddings.
    "gpt2-small.yaml": (L * LAYER + 1024 * H + 2 * H, H, 524_288, 19_073),
    # BERT: 512 positions, 2 token types, the embeddings' LayerNorm, the MLM head's transform and LayerNorm; its
    # decoder is tied to the token embeddings but has a bias per token.
    "bert-base.yaml": (L * LAYER + 512 * H + 2 * H + 2 * H + (H * H + H) + 2 * H, H + 1, 131_072, 100_000),
}


def offline(tmp_path, recipe: str) -> str:
    """The recipe with its Hub dataset swapped for the embedded corpus, everything else as shipped."""
    path = tmp_path / f"offline-{recipe}"
    path.write_text(f"base: {ROOT / 'recipes' / recipe}\ndataset_name: null\ndataset_config_name: null\n"
                    f"tokenizer_documents: 2000\n")  # fmt: skip
    return str(path)


def number(pattern: str, text: str) -> int:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in:\n{text[-3000:]}"
    return int(match.group(1).replace(",", ""))


@pytest.mark.parametrize("recipe", list(SIZES))
def test_real_size_recipe_plans_and_trains_two_steps(train, tmp_path, recipe):
    others, per_token, per_step, steps = SIZES[recipe]
    path = offline(tmp_path, recipe)
    plan = train(path, "--plan", output_dir=tmp_path / "plan")
    vocab = number(r"vocabulary: ([\d,]+) tokens", plan.out)
    params = number(r"parameters: ([\d,]+)", plan.out)
    assert params == others + vocab * per_token, (params, vocab)
    assert f"{steps:,} steps = {steps * per_step:,} tokens" in plan.out
    assert re.search(r"8 x H100 SXM .* at 40% MFU: [\d.]+ (s|min|h|days), \$[\d,.]+ at", plan.out)
    assert re.search(r"this machine \(cpu, 1 process, measured [\d.]+ GFLOP/s", plan.out)
    ddp = re.search(r"DDP: ([\d.]+) GB", plan.out)
    assert ddp and float(ddp.group(1)) == pytest.approx(16 * params / 1e9, abs=0.006)  # 16 bytes per parameter
    assert not (tmp_path / "plan" / "model.safetensors").exists()

    # Two real steps of the real-size model (short blocks, one per step: a CPU's budget).
    flags = ["--max_steps", "2", "--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "1",
             "--block_size", "64", "--warmup_steps", "0", "--logging_steps", "1", "--eval_strategy", "no",
             "--max_eval_samples", "4", "--save_strategy", "no", "--report_to", "none",
             "--plots", "false"]  # fmt: skip
    run = train(path, *flags, output_dir=tmp_path / "run")
    assert f"parameters: {params:,}" in run.out
    assert run.state()["global_step"] == 2 and len(run.losses()) == 2
    assert (tmp_path / "run" / "model.safetensors").is_file()
