"""`python -m lmc_study ...`: the study's command line (see lmc_study.cli)."""

from .cli import main

raise SystemExit(main())
