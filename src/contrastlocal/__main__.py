"""Allow ``python -m contrastlocal``."""

from contrastlocal.cli import main

raise SystemExit(main())
