"""Score a trained checkpoint: `python scripts/score.py outputs/clm [--stride 64] [--output FILE.json]`.

Perplexity on the run's own validation data (its recipe.yaml) unless flags say otherwise; `--help` lists the keys.
"""

import sys

from lm_recipes.evaluation import main

if __name__ == "__main__":
    sys.exit(main())
