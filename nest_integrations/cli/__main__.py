"""``python -m nest_integrations.cli``: the ``nest`` command line."""

from nest_integrations.cli.main import main

raise SystemExit(main())
