"""The paper's full recipe on ACDC (cardiac cine MR, 100 patients; RV, myocardium, LV).

Download the ACDC release and pass its `database` folder (holding `training/`).
The script prepares the cache, pre-trains the encoder (stage 1) and the decoder (stage 2),
fine-tunes from each initialisation and trains the random-init baseline on every |X_tr| and
combination of the paper's splits, evaluates on the test volumes and writes the results table
and the plots; see ``_full_recipe.py`` and ``contrastlocal run --help``.

Usage::

    python examples/acdc_full.py --data ACDC/database --out runs/acdc --device cuda
    python examples/acdc_full.py --data ACDC/database --num-labelled 1 --combinations 1 \\
        --set global_stage.iterations=2000      # a shorter run
    python examples/acdc_full.py --smoke        # seconds, on a generated fixture tree

Stages resume after a kill: run the same command again.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _full_recipe import main  # the helper lives beside this script

if __name__ == "__main__":
    raise SystemExit(main("acdc", __doc__ or ""))
