"""lm-recipes: Hugging Face Trainer recipes that pretrain BERT- and GPT-2-style language models from scratch."""

__version__ = "0.1.0"
