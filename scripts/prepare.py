"""Prepare a recipe's data once: `python scripts/prepare.py recipes/clm.yaml [--key value ...]`."""

import sys

from lm_recipes.cli import prepare_main

if __name__ == "__main__":
    sys.exit(prepare_main())
