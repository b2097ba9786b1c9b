"""`python -m jobd.cli`: the same as the `jobd-cli` console script."""
from __future__ import annotations

from jobd.cli import main

raise SystemExit(main())
