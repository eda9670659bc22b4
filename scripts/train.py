"""Train a recipe: `accelerate launch scripts/train.py recipes/mlm.yaml [--key value ...]`."""

import sys

from lm_recipes.cli import main

if __name__ == "__main__":
    sys.exit(main())
