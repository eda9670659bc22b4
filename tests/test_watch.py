"""Watching a run: the logged metrics, samples, TensorBoard events, plots, early stopping, the divergence guard and
`--plan`, through train.py on tiny real models."""

import json
import math
import struct
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer, EvalPrediction

from conftest import ROOT, TINY
from lm_recipes import flops, planning
from lm_recipes.arguments import DataArguments
from lm_recipes.tasks import TASKS

TRAINING_KEYS = {"loss", "perplexity", "learning_rate", "grad_norm", "weight_norm", "tokens_per_second",
                 "tokens_per_second_per_device"}  # fmt: skip
QUICK = [*TINY, "--max_steps", "20", "--eval_steps", "10", "--save_steps", "10"]


def history(run) -> tuple[list[dict], list[dict]]:
    log = run.state()["log_history"]
    return [h for h in log if "loss" in h], [h for h in log if "eval_loss" in h]


@pytest.fixture(scope="module")
def runs(trained):
    """One short run of each default recipe with everything on (its samples, TensorBoard), made once."""
    return {objective: trained(objective, *QUICK, "--report_to", "tensorboard") for objective in ("mlm", "clm")}


@pytest.mark.parametrize("objective", ["mlm", "clm"])
def test_each_log_has_the_watchers_keys(runs, objective):
    out, console = runs[objective]
    log = json.loads((out / "trainer_state.json").read_text())["log_history"]
    train_logs, eval_logs = [h for h in log if "loss" in h], [h for h in log if "eval_loss" in h]
    assert len(train_logs) == 4 and len(eval_logs) == 3  # steps 5..20; evaluations at 10, 20 and the final one
    for h in train_logs:
        assert TRAINING_KEYS <= set(h), set(h)
        assert "mfu" not in h  # no peak FLOP/s on a CPU
        assert h["perplexity"] == pytest.approx(math.exp(h["loss"]))
        assert h["tokens_per_second"] == pytest.approx(h["tokens_per_second_per_device"])  # one process
        assert h["tokens_per_second"] > 0 and h["weight_norm"] > 0
    for h in eval_logs:
        assert 0 < h["eval_accuracy"] < 1 and h["eval_perplexity"] == pytest.approx(math.exp(h["eval_loss"]))
    assert "samples at step 10" in console


def test_weight_norm_is_the_norm_of_the_saved_parameters(runs):
    out, _ = runs["clm"]
    weights = load_file(out / "checkpoint-20" / "model.safetensors")
    # Tied weights are stored once, as model.parameters() yields them once.
    norm = torch.linalg.vector_norm(torch.cat([w.flatten() for w in weights.values()])).item()
    logged = json.loads((out / "checkpoint-20" / "trainer_state.json").read_text())["log_history"]
    assert [h for h in logged if "loss" in h][-1]["weight_norm"] == pytest.approx(norm, rel=1e-4)


@pytest.mark.parametrize("objective", ["mlm", "clm"])
def test_samples_file_has_one_record_per_evaluation(runs, objective):
    out, _ = runs[objective]
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    evals = [h for h in json.loads((out / "trainer_state.json").read_text())["log_history"] if "eval_loss" in h]
    # The final evaluation sees the model of the step-20 one: its samples are recorded (and printed) once.
    assert [h["step"] for h in evals] == [10, 20, 20] and [r["step"] for r in records] == [10, 20]
    assert runs[objective][1].count("samples at step 20") == 1
    prompts = yaml.safe_load((ROOT / f"recipes/{objective}.yaml").read_text())["samples"]
    for r in records:
        assert len(r["samples"]) == len(prompts)
        for sample, prompt in zip(r["samples"], prompts, strict=True):
            if objective == "mlm":
                assert sample["text"] == prompt and len(sample["candidates"]) == 5
                scores = [c["score"] for c in sample["candidates"]]
                assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0001
            else:
                assert sample["prompt"] == prompt and sample["completions"][0].strip()


@pytest.mark.parametrize("objective", ["mlm", "clm"])
def test_tensorboard_gets_the_metrics_and_the_samples_as_text(runs, objective):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _ = runs[objective]
    scalars, texts = set(), set()
    for folder in (out / "runs").iterdir():
        events = EventAccumulator(str(folder))
        events.Reload()
        scalars |= set(events.Tags()["scalars"])
        texts |= set(events.Tags()["tensors"])
    assert {f"train/{k}" for k in TRAINING_KEYS} | {"eval/loss", "eval/accuracy", "eval/perplexity"} <= scalars
    assert "train/samples/text_summary" in texts


def test_a_finished_run_run_again_says_so_first_and_appends_nothing(train, tmp_path):
    flags = [*TINY, "--max_steps", "5", "--eval_steps", "5", "--save_steps", "5", "--report_to", "tensorboard"]
    first = train("clm.yaml", *flags)
    events = sorted(first.output_dir.glob("runs/*/events.out.tfevents.*"))
    samples = (first.output_dir / "samples.jsonl").read_text()
    again = train("clm.yaml", *flags)
    ours = [line for line in again.out.splitlines() if " lm_recipes." in line]
    assert ours[0].endswith("checkpoint-5 is the last step of this run (5): nothing left to train"), ours[:3]
    assert "from scratch" not in again.out and "samples at step" not in again.out
    assert not (tmp_path / "runs").exists()  # the working folder: SummaryWriter's default
    assert len(events) >= 2 and sorted(first.output_dir.glob("runs/*/events.out.tfevents.*")) == events
    assert (first.output_dir / "samples.jsonl").read_text() == samples


@pytest.mark.parametrize("objective", ["mlm", "clm"])
def test_the_run_ends_with_a_plot(runs, objective):
    out, _ = runs[objective]
    png = (out / "training.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", png[16:24])
    assert width > 800 and height > 600


@pytest.mark.parametrize("objective", ["mlm", "clm"])
def test_token_accuracy_matches_a_direct_computation(runs, objective):
    out, _ = runs[objective]
    auto = AutoModelForMaskedLM if objective == "mlm" else AutoModelForCausalLM
    model, tokenizer = auto.from_pretrained(out).eval(), AutoTokenizer.from_pretrained(out)
    ids = torch.randint(5, len(tokenizer), (4, 32), generator=torch.Generator().manual_seed(0))
    task = TASKS[objective]
    batch = task.build_collator(tokenizer, DataArguments(mlm_probability=0.3), seed=0)([{"input_ids": r} for r in ids])
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"]).logits
    predicted = task.preprocess_logits((logits,), batch["labels"])
    metrics = task.build_metrics()(EvalPrediction(predicted.numpy(), batch["labels"].numpy()))

    right = total = 0
    for row in range(4):
        for t in range(32):
            # mlm scores each masked token where it stands; clm scores token t+1 from position t.
            target = int(batch["labels"][row, t]) if objective == "mlm" else int(ids[row, t + 1]) if t < 31 else -100
            if target != -100:
                right += int(logits[row, t].argmax()) == target
                total += 1
    assert total > 0 and metrics["accuracy"] == pytest.approx(right / total)


def test_extras_do_not_change_what_the_run_learns(train, tmp_path):
    """Samples draw at their own seed and MLM evaluation masks with its own generator: the training losses are the
    same with every watcher on and with all of them off."""
    off = tmp_path / "off.yaml"
    off.write_text(
        f"base: {ROOT / 'recipes/mlm.yaml'}\nsamples: []\ntoken_accuracy: false\nlog_throughput: false\n"
        "log_weight_norm: false\ndivergence_guard: false\nplots: false\nreport_to: none\n"
    )
    on = train("mlm.yaml", *QUICK, "--report_to", "none", output_dir=tmp_path / "on")
    plain = train(str(off), *QUICK, output_dir=tmp_path / "plain")
    assert on.losses() == plain.losses()
    assert set(history(plain)[0][0]) & {"weight_norm", "tokens_per_second"} == set()
    assert not (tmp_path / "plain" / "samples.jsonl").exists() and not (tmp_path / "plain" / "training.png").exists()
    # The evaluation masks are fixed, so both runs' evaluations agree too.
    assert [h["eval_loss"] for h in history(on)[1]] == [h["eval_loss"] for h in history(plain)[1]]


def test_divergence_stops_the_run_and_keeps_the_checkpoint(train, tmp_path):
    flags = [*TINY, "--eval_strategy", "no", "--save_steps", "5", "--report_to", "none"]
    good = train("clm.yaml", *flags, "--max_steps", "10")
    checkpoint = good.output_dir / "checkpoint-10"
    before = {p.name: p.read_bytes() for p in checkpoint.iterdir()}

    # The same run resumed with an absurd learning rate: the recipe's new value applies from the checkpoint on.
    bad = train("clm.yaml", *flags, "--max_steps", "30", "--learning_rate", "10", check=False)
    assert bad.returncode == 4, bad.out[-3000:]
    assert "learning_rate: 0.002 in the checkpoint, 10 in the recipe" in bad.out
    assert "error: training diverged at step 15" in bad.out
    for fix in ("learning_rate (now 10)", "warmup_steps", "max_grad_norm"):
        assert fix in bad.out
    # Nothing was saved from the diverged state: checkpoint-10 is byte for byte what it was, and no later one exists.
    assert sorted(p.name for p in good.output_dir.glob("checkpoint-*")) == ["checkpoint-10", "checkpoint-5"]
    assert {p.name: p.read_bytes() for p in checkpoint.iterdir()} == before

    # The advice works: a sane learning rate resumes from checkpoint-10 and finishes.
    fixed = train("clm.yaml", *flags, "--max_steps", "20", "--learning_rate", "1e-3")
    assert "Resuming from" in fixed.out and fixed.state()["global_step"] == 20
    assert history(fixed)[0][-1]["learning_rate"] < 1e-3


def test_a_nan_loss_stops_the_run(train):
    bad = train("clm.yaml", *TINY, "--max_steps", "10", "--eval_strategy", "no", "--save_strategy", "no",
                "--learning_rate", "1e38", "--report_to", "none", check=False)  # fmt: skip
    assert bad.returncode == 4, bad.out[-3000:]
    assert "error: training diverged at step 5" in bad.out and "no checkpoint was saved" in bad.out
    assert not (bad.output_dir / "model.safetensors").exists()


def test_early_stopping_keeps_the_best_model(train):
    # A constant learning rate too high for this model: the validation loss falls, then rises again.
    run = train("clm.yaml", *TINY, "--learning_rate", "0.05", "--lr_scheduler_type", "constant", "--max_steps", "40",
                "--eval_steps", "5", "--save_steps", "5", "--early_stopping_patience", "1", "--load_best_model_at_end",
                "true", "--report_to", "none")  # fmt: skip
    state = run.state()
    evals = [(h["step"], h["eval_loss"]) for h in history(run)[1]][:-1]  # the last is the final evaluation
    best_step, best_loss = min(evals, key=lambda e: e[1])
    # Patience 1: training stopped at the first evaluation that was not better, well before max_steps.
    assert state["global_step"] == evals[-1][0] < 40 and evals[-1][1] >= best_loss and best_step < evals[-1][0]
    assert state["best_model_checkpoint"].endswith(f"checkpoint-{best_step}")
    best = load_file(run.output_dir / f"checkpoint-{best_step}" / "model.safetensors")
    final = load_file(run.output_dir / "model.safetensors")
    assert all(torch.equal(best[k], final[k]) for k in best)
    assert history(run)[1][-1]["eval_loss"] == pytest.approx(best_loss)  # the final evaluation is of the best model


def test_early_stopping_needs_load_best_model_at_end(train):
    run = train("clm.yaml", *TINY, "--early_stopping_patience", "2", check=False)
    assert run.returncode == 2 and "early_stopping_patience: needs load_best_model_at_end: true" in run.out
    assert not run.output_dir.exists()


def test_mlm_samples_need_one_mask(train):
    run = train("mlm.yaml", *TINY, "--samples", "no mask here", check=False)
    assert run.returncode == 2 and "samples: 'no mask here' has 0 [MASK] tokens; write exactly one [MASK]" in run.out
    assert not run.output_dir.exists()


def test_plan_trains_nothing_and_draws_the_trainers_schedule(train, tmp_path, cache_dir):
    flags = [*TINY, "--max_steps", "20", "--eval_strategy", "no", "--save_strategy", "no", "--report_to", "none",
             "--warmup_steps", "0.2", "--learning_rate", "1e-3"]  # fmt: skip
    plan = train("clm.yaml", *flags, "--plan", output_dir=tmp_path / "plan")
    for line in ("parameters:", "tokens per optimizer step: 512", "optimizer steps: 20; tokens seen: 10,240",
                 "training compute:", "peak 0.001 after 4 warmup steps"):  # fmt: skip
        assert line in plan.out
    schedule = tmp_path / "plan" / planning.SCHEDULE_FILE
    assert schedule.read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in (tmp_path / "plan").iterdir()) == [planning.SCHEDULE_FILE]

    # The schedule drawn is the Trainer's: each logged learning rate is the plan's for that step.
    run = train("clm.yaml", *flags, "--logging_steps", "1", output_dir=tmp_path / "run")
    from lm_recipes import recipe as recipes
    from lm_recipes import training

    recipe = recipes.load([str(ROOT / "recipes/clm.yaml"), *flags, "--output_dir", str(tmp_path / "x"),
                           "--cache_dir", cache_dir])  # fmt: skip
    lrs = planning.schedule(training.build(recipe), 20)
    logged = [h["learning_rate"] for h in history(run)[0]]
    assert logged == pytest.approx(lrs, rel=1e-6)


def test_flops_per_token_agree_with_torchs_flop_counter():
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=1000, n_positions=64, n_embd=64, n_layer=2, n_head=2, n_inner=128)
    model = GPT2LMHeadModel(config)
    ids = torch.randint(0, 1000, (2, 64), generator=torch.Generator().manual_seed(0))
    # torch counts the matmuls of one forward and backward pass (2 FLOPs a multiply-add); per token that is the
    # formula's 6N + 12·L·d·T, the attention scores counted over the whole T x T square (as the formula does).
    with FlopCounterMode(display=False) as counter:
        model(input_ids=ids, labels=ids).loss.backward()
    counted = counter.get_total_flops() / ids.numel()
    # Within 2%: torch also counts the small matmuls the formula leaves out and none of the elementwise work.
    assert flops.flops_per_token(model, 64) == pytest.approx(counted, rel=0.02)


@pytest.mark.parametrize(
    ("name", "dtype", "tflops"),
    [("NVIDIA A100-SXM4-80GB", "bf16", 312), ("NVIDIA H100 80GB HBM3", "bf16", 989.4),
     ("NVIDIA H100 PCIe", "fp16", 756), ("Tesla V100-SXM2-16GB", "bf16", None), ("NVIDIA A10G", "bf16", None),
     ("NVIDIA L40", "bf16", 181), ("NVIDIA L4", "fp32", 30.3), ("NVIDIA A100-SXM4-40GB", "tf32", 156),
     ("NVIDIA H100 80GB HBM3", "tf32", 494.7), ("Tesla T4", "tf32", None), ("Some Future GPU", "bf16", None)],
)  # fmt: skip
def test_gpu_peaks_come_from_the_name(name, dtype, tflops):
    assert flops.gpu_peak(name, dtype) == (tflops * 1e12 if tflops else None)


def test_no_mfu_on_cpu_unless_the_peak_is_given():
    assert flops.peak_flops(torch.device("cpu"), "fp32") is None
    assert flops.peak_flops(torch.device("cpu"), "fp32", peak_tflops=2.5) == 2.5e12


def test_samples_at_the_same_seed_are_the_same(runs):
    from lm_recipes import samples

    out, _ = runs["clm"]
    model, tokenizer = AutoModelForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = samples.complete(model, tokenizer, ["HAMLET:"], max_new_tokens=8, seed=1)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random stream is untouched
    assert samples.complete(model, tokenizer, ["HAMLET:"], max_new_tokens=8, seed=1) == first
    assert samples.complete(model, tokenizer, ["HAMLET:"], max_new_tokens=8, seed=2) != first
    greedy = samples.complete(model, tokenizer, ["HAMLET:"], max_new_tokens=8, strategy="greedy", seed=1)
    assert samples.complete(model, tokenizer, ["HAMLET:"], max_new_tokens=8, strategy="greedy", seed=2) == greedy


@pytest.mark.parametrize("objective", ["mlm", "clm"])
def test_generate_script(runs, env, objective):
    out, _ = runs[objective]
    prompt = "the king is [MASK]." if objective == "mlm" else "HAMLET:"
    cmd = [sys.executable, str(ROOT / "scripts/generate.py"), str(out), prompt, "--json", "--max_new_tokens", "6"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    record = json.loads(first.stdout.strip().splitlines()[-1])
    if objective == "mlm":
        assert record["text"] == prompt and len(record["candidates"]) == 5
    else:
        assert record["prompt"] == prompt and len(record["completions"]) == 1
        again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert again.stdout == first.stdout  # seeded


def test_generate_script_errors(runs, env, tmp_path):
    script = str(ROOT / "scripts/generate.py")
    missing = subprocess.run([sys.executable, script, str(tmp_path / "nothing"), "hi"], env=env, capture_output=True,
                             text=True, timeout=300)  # fmt: skip
    assert missing.returncode == 2 and "CHECKPOINT:" in missing.stderr
    no_mask = subprocess.run([sys.executable, script, str(runs["mlm"][0]), "no mask"], env=env, capture_output=True,
                             text=True, timeout=300)  # fmt: skip
    assert no_mask.returncode == 2 and "exactly one [MASK]" in no_mask.stderr
