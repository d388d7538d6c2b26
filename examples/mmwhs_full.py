"""The paper's full recipe on MM-WHS MR (20 labelled volumes; 7 cardiac structures).

Pass the MM-WHS folder holding the `mr_train` images and labels as distributed.
The script prepares the cache, pre-trains the encoder (stage 1) and the decoder (stage 2),
fine-tunes from each initialisation and trains the random-init baseline on every |X_tr| and
combination of the paper's splits, evaluates on the test volumes and writes the results table
and the plots; see ``_full_recipe.py`` and ``contrastlocal run --help``.

Usage::

    python examples/mmwhs_full.py --data MMWHS --out runs/mmwhs --device cuda
    python examples/mmwhs_full.py --data MMWHS --num-labelled 1 --combinations 1 \\
        --set global_stage.iterations=2000      # a shorter run
    python examples/mmwhs_full.py --smoke        # seconds, on a generated fixture tree

Stages resume after a kill: run the same command again.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _full_recipe import main  # the helper lives beside this script

if __name__ == "__main__":
    raise SystemExit(main("mmwhs", __doc__ or ""))
