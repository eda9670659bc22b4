"""Plot a run: `python scripts/plot.py OUTPUT_DIR` writes OUTPUT_DIR/training.png from its trainer_state.json."""

import sys

from lm_recipes.plots import main

if __name__ == "__main__":
    sys.exit(main())
