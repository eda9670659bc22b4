"""Tokenizers: WordPiece (BERT) or byte-level BPE (GPT-2) trained with `tokenizers` on the training split.

A trained tokenizer is cached under its fingerprint (settings + training data), so a rerun of an unchanged
recipe, or another process of the same run, loads it instead of training again.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import datasets
import tokenizers
from datasets.fingerprint import Hasher
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, BertTokenizer, GPT2Tokenizer, PreTrainedTokenizerBase

from .arguments import TOKENIZER_TYPES, ModelArguments, TokenizerArguments
from .recipe import RecipeError

logger = logging.getLogger(__name__)

BERT_SPECIALS = {
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}
EOS = "<|endoftext|>"
# GPT-2 has no padding token. Reusing EOS for padding would make the causal collator drop every document
# separator from the loss (it masks labels equal to pad_token_id), so padding gets a token of its own.
PAD = "<|padding|>"
GPT2_SPECIALS = {"bos_token": EOS, "eos_token": EOS, "unk_token": EOS, "pad_token": PAD}

_FORMAT = 2  # bump when the way tokenizers are trained changes, to leave stale cache entries behind


class BertTokenizerFast(BertTokenizer):
    """transformers' BERT tokenizer, saved under the class name transformers 4.x loads as its fast BERT tokenizer.

    transformers 5 reads `BertTokenizerFast` as an alias of `BertTokenizer`, so both major versions load the folder.
    """

    can_save_slow_tokenizer = False  # keeps the "Fast" in tokenizer_config.json's tokenizer_class


class GPT2TokenizerFast(GPT2Tokenizer):
    """transformers' GPT-2 tokenizer, saved as `GPT2TokenizerFast` for the same reason as BertTokenizerFast."""

    can_save_slow_tokenizer = False


_CONCRETE = {BertTokenizer: BertTokenizerFast, GPT2Tokenizer: GPT2TokenizerFast}


def build(
    args: TokenizerArguments,
    model_args: ModelArguments,
    train_texts: datasets.Dataset,
    text_column: str,
    model_max_length: int,
    cache_dir: str | None = None,
) -> PreTrainedTokenizerBase:
    """The run's tokenizer: from the starting checkpoint, from `tokenizer_name`, from the cache, or trained."""
    if model_args.model_name_or_path:
        logger.info("Using the tokenizer of %s (not retraining one)", model_args.model_name_or_path)
        return load(model_args.model_name_or_path, "model_name_or_path")
    if args.tokenizer_name:
        logger.info("Using the tokenizer %s", args.tokenizer_name)
        return load(args.tokenizer_name)

    kind = kind_for(args, model_args)
    key = Hasher.hash([_FORMAT, tokenizers.__version__, kind, vars(args), train_texts._fingerprint, text_column])
    root = Path(cache_dir or datasets.config.HF_DATASETS_CACHE) / "lm_recipes_tokenizers"
    cached = root / f"{key}.json"
    if cached.is_file():
        logger.info("Reusing the tokenizer trained earlier on the same data and settings (%s)", cached)
        return wrap(tokenizers.Tokenizer.from_file(str(cached)), kind, args, model_max_length)

    logger.info("Training a %s tokenizer of %d tokens on %d documents", kind, args.vocab_size, len(train_texts))
    tok = train(args, kind, train_texts, text_column)
    # Write, then rename: a process reading the cache never sees half a file.
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".tmp-", suffix=".json")
    os.close(fd)
    tok.save(tmp)
    os.replace(tmp, cached)
    return wrap(tok, kind, args, model_max_length)


def kind_for(args: TokenizerArguments, model_args: ModelArguments) -> str:
    if args.tokenizer_type != "auto":
        return args.tokenizer_type
    return TOKENIZER_TYPES.get(model_args.resolved_model_type, "bpe")


def train(args: TokenizerArguments, kind: str, texts: datasets.Dataset, text_column: str) -> tokenizers.Tokenizer:
    """A `tokenizers` WordPiece with BERT normalisation and `[CLS] … [SEP]`, or a byte-level BPE."""

    def batches():
        for batch in texts.select_columns([text_column]).iter(batch_size=1000):
            yield batch[text_column]

    if kind == "wordpiece":
        tok = _train_wordpiece(args, batches, len(texts))
        cls, sep = BERT_SPECIALS["cls_token"], BERT_SPECIALS["sep_token"]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{cls} $A {sep}",
            pair=f"{cls} $A {sep} $B:1 {sep}:1",
            special_tokens=[(cls, tok.token_to_id(cls)), (sep, tok.token_to_id(sep))],
        )
        return tok

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)  # adds no token: no BOS before the text
    trainer = trainers.BpeTrainer(
        vocab_size=args.vocab_size,
        min_frequency=args.min_frequency,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(batches(), trainer, length=len(texts))
    return tok


def _wordpiece(vocab: dict[str, int] | None = None, lowercase: bool = True) -> tokenizers.Tokenizer:
    model = models.WordPiece(vocab, unk_token=BERT_SPECIALS["unk_token"], continuing_subword_prefix="##")
    tok = tokenizers.Tokenizer(model)
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def _train_wordpiece(args: TokenizerArguments, batches, length: int) -> tokenizers.Tokenizer:
    """WordPiece, the same vocabulary and ids every time for the same text and settings.

    `tokenizers`' WordPiece trainer numbers each `##c` piece when it first meets it while walking a hash map of the
    words, whose order changes from process to process; merges of equal count are then taken in an order that
    follows those ids, so ids (and, at the vocabulary's edge, tokens) varied between runs. A first pass with no
    room for merges lists the `##c` pieces (the trainer's own alphabet); the second pass gets them, sorted, right
    after the special tokens, so every id it hands out is fixed. The tokenizer is then rebuilt from that vocabulary
    with only the real special tokens.
    """

    def trainer(vocab_size: int, specials: list[str]) -> trainers.WordPieceTrainer:
        return trainers.WordPieceTrainer(
            vocab_size=vocab_size, min_frequency=args.min_frequency, special_tokens=specials,
            continuing_subword_prefix="##", show_progress=vocab_size > 0,
        )  # fmt: skip

    specials = list(BERT_SPECIALS.values())
    alphabet = _wordpiece(lowercase=args.lowercase)
    alphabet.train_from_iterator(batches(), trainer(0, specials), length=length)
    pieces = sorted(t for t in alphabet.get_vocab(with_added_tokens=False) if t.startswith("##"))
    trained = _wordpiece(lowercase=args.lowercase)
    trained.train_from_iterator(batches(), trainer(args.vocab_size, specials + pieces), length=length)
    tok = _wordpiece(trained.get_vocab(with_added_tokens=False), args.lowercase)
    tok.add_special_tokens(specials)
    return tok


def wrap(tok: tokenizers.Tokenizer, kind: str, args: TokenizerArguments, model_max_length: int):
    """The transformers tokenizer around a trained `tokenizers` one, special tokens named."""
    if kind == "wordpiece":
        return BertTokenizerFast(
            tokenizer_object=tok, do_lower_case=args.lowercase, model_max_length=model_max_length, **BERT_SPECIALS
        )
    return GPT2TokenizerFast(
        tokenizer_object=tok, add_prefix_space=False, model_max_length=model_max_length, **GPT2_SPECIALS
    )


def load(name_or_path: str, key: str = "tokenizer_name") -> PreTrainedTokenizerBase:
    """AutoTokenizer, upgraded to the class name that both transformers 4.x and 5.x load (see BertTokenizerFast)."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except Exception as e:  # noqa: BLE001  (tokenizers raises a bare Exception for a damaged tokenizer.json)
        where = "" if Path(name_or_path).is_dir() else " (not a local folder; as a Hub id it needs the network)"
        raise RecipeError(
            f"{key}: cannot load a tokenizer from `{name_or_path}`{where} ({type(e).__name__}: "
            f"{' '.join(str(e).split())[:500]}); give a folder saved with tokenizer.save_pretrained, or a Hub id"
        ) from None
    concrete = _CONCRETE.get(type(tokenizer))
    if concrete is not None:
        tokenizer = concrete.from_pretrained(name_or_path)
    # from_pretrained keeps how it was called among the kwargs it saves again; they say nothing of the tokenizer
    # and `local_files_only` would follow the folder to the Hub.
    for key in ("local_files_only", "is_local"):
        tokenizer.init_kwargs.pop(key, None)
    return tokenizer
