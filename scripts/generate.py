"""Sample from a checkpoint: `python scripts/generate.py CHECKPOINT "prompt" ...` (clm completes, mlm fills [MASK])."""

import sys

from lm_recipes.generation import main

if __name__ == "__main__":
    sys.exit(main())
