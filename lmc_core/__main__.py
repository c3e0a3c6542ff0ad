"""`python -m lmc_core ...`: the command line (see lmc_core.cli)."""

from .cli import main

raise SystemExit(main())
