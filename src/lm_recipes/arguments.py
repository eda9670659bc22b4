"""The typed arguments of a recipe: one dataclass per concern, plus the Trainer's own `TrainingArguments`.

Each field's help (meaning and unit) is what `train.py RECIPE --help` prints; `recipe.py` loads them from YAML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from transformers import TrainingArguments as HfTrainingArguments

# Held out of every default recipe, one play per genre, so the genre task tests on plays no model has seen.
VALIDATION_PLAYS = ("hamlet", "twelfth-night", "richard-ii", "the-tempest", "julius-caesar", "measure-for-measure")
# The architectures each objective can build from scratch; the first is what `model_type: auto` picks.
ARCHITECTURES = {
    "mlm": ("bert", "modernbert"),
    "clm": ("gpt2", "llama"),
    "classification": ("bert", "gpt2", "modernbert", "llama"),
}
# The tokenizer each architecture is trained with (`tokenizer_type: auto`): WordPiece for the encoders, byte-level BPE
# for the decoders.
TOKENIZER_TYPES = {"bert": "wordpiece", "modernbert": "wordpiece", "gpt2": "bpe", "llama": "bpe"}
# Model keys that a starting checkpoint decides: with model_name_or_path they are read from its config instead.
FROM_CHECKPOINT = (
    "model_type", "num_layers", "num_heads", "hidden_size", "intermediate_size", "max_position_embeddings", "dropout",
    "attention_dropout",
)  # fmt: skip


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
    whole_word_mask: bool = field(
        default=False,
        metadata={"help": "MLM only: mask every piece of a picked word together (mlm_probability of the words' first "
                  "pieces are picked), all as [MASK] (no random or kept tokens). Blocks then carry each token's "
                  "character offsets, which mark where words start."},
    )  # fmt: skip
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only the first N training blocks."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep only the first N validation blocks."})
    preprocessing_num_workers: int | None = field(
        default=None, metadata={"help": "Processes for tokenization (datasets.map num_proc); none: one process."}
    )
    cache_dir: str | None = field(default=None, metadata={"help": "datasets cache folder; none: HF_DATASETS_CACHE."})
    overwrite_cache: bool = field(default=False, metadata={"help": "Redo tokenization instead of using the cache."})
    prepared_dir: str | None = field(
        default=None,
        metadata={"help": "Where scripts/prepare.py writes the tokenizer and blocks, and training loads them from; "
                          "none: a folder under the datasets cache named by the data keys."},
    )  # fmt: skip
    streaming: bool = field(
        default=False,
        metadata={"help": "Stream the training text (datasets streaming): read, tokenized and cut into blocks as "
                          "training goes, never held whole; needs max_steps."},
    )  # fmt: skip
    validation_documents: int | None = field(
        default=None,
        metadata={"help": "streaming: validation documents, from the head of the validation split (none: all of "
                          "it) or, without one, held out from the head of the training stream."},
    )  # fmt: skip
    tokenizer_documents: int = field(
        default=10000,
        metadata={"help": "streaming: documents from the head of the training stream the tokenizer is trained on."},
    )

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
    model_type: Literal["auto", "bert", "gpt2", "modernbert", "llama"] = field(
        default="auto",
        metadata={"help": "Architecture built from scratch: bert or modernbert (mlm, classification), gpt2 or llama "
                  "(clm, classification); auto: bert for mlm and classification, gpt2 for clm."},
    )  # fmt: skip
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Start from this checkpoint (folder or Hub id) instead of from scratch."}
    )
    num_layers: int = field(default=4, metadata={"help": "Transformer layers."})
    num_heads: int = field(default=4, metadata={"help": "Attention heads per layer; must divide hidden_size."})
    hidden_size: int = field(default=256, metadata={"help": "Width of the residual stream (embedding size)."})
    intermediate_size: int = field(default=1024, metadata={"help": "Width of each feed-forward layer."})
    max_position_embeddings: int = field(default=512, metadata={"help": "Positions the model has, in tokens."})
    dropout: float = field(
        default=0.1,
        metadata={"help": "Dropout on embeddings and residual branches (modernbert: on embeddings and inside the "
                  "feed-forward layer; llama has none, so it must be 0)."},
    )  # fmt: skip
    attention_dropout: float = field(default=0.1, metadata={"help": "Dropout on attention probabilities."})
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2", "flash_attention_3"] = field(
        default="sdpa",
        metadata={"help": "Attention kernel: sdpa (torch's fused scaled_dot_product_attention, flash or "
                  "memory-efficient on GPUs), eager (the plain matmul-softmax-matmul), or flash_attention_2/3 "
                  "(needs the flash-attn package and a GPU)."},
    )  # fmt: skip

    @property
    def resolved_model_type(self) -> str | None:
        if self.model_type != "auto":
            return self.model_type
        return ARCHITECTURES.get(self.objective, (None,))[0]


@dataclass
class WatchArguments:
    """What a run shows while it trains (metrics, samples, throughput) and when it stops itself."""

    token_accuracy: bool = field(
        default=True,
        metadata={"help": "mlm/clm: masked-/next-token accuracy at each evaluation, from argmax predictions."},
    )
    log_throughput: bool = field(
        default=True, metadata={"help": "Log tokens per second (per device and in total), and MFU on GPUs."}
    )
    peak_tflops: float | None = field(
        default=None,
        metadata={"help": "Dense peak TFLOP/s of one device in the training dtype, for MFU; none: looked up "
                  "from the GPU's name (no MFU on CPU or an unknown GPU)."},
    )  # fmt: skip
    log_weight_norm: bool = field(default=True, metadata={"help": "Log the L2 norm of all parameters."})
    samples: list[str] = field(
        default_factory=list,
        metadata={"help": "At each evaluation: clm completes these prompts, mlm fills the [MASK] in these sentences."},
    )
    sample_strategy: Literal["greedy", "top_k"] = field(
        default="top_k", metadata={"help": "clm samples: greedy decoding, or top-k sampling (seeded by `seed`)."}
    )
    sample_top_k: int = field(default=50, metadata={"help": "clm top_k sampling: tokens drawn among, per step."})
    sample_temperature: float = field(default=1.0, metadata={"help": "clm top_k sampling: softmax temperature."})
    sample_max_new_tokens: int = field(default=30, metadata={"help": "clm samples: tokens generated per prompt."})
    fill_mask_candidates: int = field(default=5, metadata={"help": "mlm samples: candidates shown per [MASK]."})
    early_stopping_patience: int | None = field(
        default=None,
        metadata={"help": "Stop after this many evaluations without a better metric_for_best_model (eval loss); "
                  "needs load_best_model_at_end: true. none: never stop early."},
    )  # fmt: skip
    early_stopping_threshold: float = field(
        default=0.0, metadata={"help": "Smallest improvement of the metric that counts as better."}
    )
    divergence_guard: bool = field(
        default=True, metadata={"help": "Stop the run when the training loss or gradient norm is NaN/inf."}
    )
    divergence_threshold: float | None = field(
        default=2.0,
        metadata={"help": "Also stop when the logged training loss rises this many nats above its lowest value "
                  "so far (a spike); none: stop on NaN/inf only."},
    )  # fmt: skip
    plots: bool = field(default=True, metadata={"help": "Write output_dir/training.png at the end of the run."})


@dataclass
class TrainingArguments(HfTrainingArguments):
    """The Trainer's own arguments, plus the precision to pick for the hardware."""

    report_to: None | str | list[str] = field(
        default="auto",
        metadata={"help": "Loggers (tensorboard, trackio, wandb, mlflow, ...), all, or none; auto: tensorboard when "
                  "installed (event files under output_dir/runs), else none."},
    )  # fmt: skip
    precision: Literal["auto", "bf16", "fp16", "fp32"] = field(
        default="auto",
        metadata={
            "help": "auto: bf16 where the GPU supports it, else fp16 on CUDA, fp32 on CPU; and "
            "TF32 matmuls on GPUs that have them (Ampere and newer)."
        },
    )

    def __post_init__(self):
        # Keys resolved for this machine below are saved as given, so a saved recipe still fits another machine.
        self.as_given = {
            k: getattr(self, k) for k in ("use_cpu", "bf16", "fp16", "tf32", "dataloader_pin_memory", "report_to")
        }
        if self.report_to in ("auto", ["auto"]):
            self.report_to = "tensorboard" if _has_tensorboard() else "none"
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
        if self.precision == "auto" and self.tf32 is None and not self.use_cpu and _has_tf32():
            self.tf32 = True  # fp32 matmuls (those autocast leaves, or all of a fp32 run) on tensor cores
        if not _has_cuda():
            self.dataloader_pin_memory = False  # pinning only helps copies to a CUDA device
        super().__post_init__()

    def __getstate__(self):
        # The Trainer pickles its arguments into training_args.bin beside the model, which is pushed with it.
        return {**self.__dict__, "hub_token": None}


def _has_tensorboard() -> bool:
    from transformers.integrations import is_tensorboard_available

    return is_tensorboard_available()


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _has_tf32() -> bool:
    from transformers.utils import is_torch_tf32_available

    return is_torch_tf32_available()  # a CUDA GPU of compute capability 8 (Ampere) or newer


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
