"""``python -m tgif`` runs the command line (same as the ``tgif`` script)."""

from tgif.cli import main

raise SystemExit(main())
