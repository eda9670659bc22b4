"""Models built from recipe keys, and the loss scaling the Trainer relies on under gradient accumulation."""

import pytest
from datasets import Dataset

from lm_recipes import corpus, models, tokenizer
from lm_recipes.arguments import ModelArguments, TokenizerArguments

SIZE = {"num_layers": 3, "num_heads": 2, "hidden_size": 32, "intermediate_size": 48, "max_position_embeddings": 40}


@pytest.fixture(scope="module")
def texts():
    return Dataset.from_list(list(corpus.generate_documents(["macbeth"], corpus.version())))


@pytest.mark.parametrize("objective, cls", [("mlm", "BertForMaskedLM"), ("clm", "GPT2LMHeadModel")])
def test_model_is_sized_by_the_recipe_and_the_tokenizer(texts, tmp_path, objective, cls):
    args = ModelArguments(objective=objective, **SIZE)
    tok = tokenizer.build(TokenizerArguments(vocab_size=500), args, texts, "text", 40, str(tmp_path))
    model = models.build(args, tok)
    assert type(model).__name__ == cls
    c = model.config
    assert c.vocab_size == len(tok) == 500
    assert (c.num_hidden_layers, c.num_attention_heads, c.hidden_size) == (3, 2, 32)
    assert models.positions(model) == 40
    assert c.pad_token_id == tok.pad_token_id
    # Whatever the architecture does with `num_items_in_batch`, the Trainer is told the truth.
    if not models.loss_honours_num_items(model):
        assert model.accepts_loss_kwargs is False
