"""Score a trained checkpoint: `python scripts/evaluate.py outputs/clm [--stride 64] [--output FILE.json]`.

Perplexity on the run's own validation data (its recipe.yaml) unless flags say otherwise; `--help` lists the keys.
"""

import importlib
import sys
from pathlib import Path

# Python puts this folder first on sys.path, where this file's name hides the `evaluate` library that lm_recipes
# imports, from this script and from train.py beside it. Take the folder off the path, and when this file is
# imported as `evaluate`, hand the importer the library instead.
_folder = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _folder]
if __name__ != "__main__":
    del sys.modules[__name__]
    sys.modules[__name__] = importlib.import_module(__name__)
else:
    from lm_recipes.evaluation import main

    sys.exit(main())
