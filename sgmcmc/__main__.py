"""``python -m sgmcmc``: the ``sgmcmc`` command, for an environment whose scripts are not on PATH."""

from sgmcmc.cli import main

raise SystemExit(main())
