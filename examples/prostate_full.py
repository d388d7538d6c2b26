"""The paper's full recipe on the MSD prostate task (Task05_Prostate; classes PZ, TZ).

Download Task05_Prostate and pass its folder (holding `dataset.json`, `imagesTr/`, `labelsTr/`).
The script prepares the cache, pre-trains the encoder (stage 1) and the decoder (stage 2),
fine-tunes from each initialisation and trains the random-init baseline on every |X_tr| and
combination of the paper's splits, evaluates on the test volumes and writes the results table
and the plots; see ``_full_recipe.py`` and ``contrastlocal run --help``.

Usage::

    python examples/prostate_full.py --data Task05_Prostate --out runs/prostate --device cuda
    python examples/prostate_full.py --data Task05_Prostate --num-labelled 1 --combinations 1 \\
        --set global_stage.iterations=2000      # a shorter run
    python examples/prostate_full.py --smoke        # seconds, on a generated fixture tree

Stages resume after a kill: run the same command again.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _full_recipe import main  # the helper lives beside this script

if __name__ == "__main__":
    raise SystemExit(main("prostate", __doc__ or ""))
