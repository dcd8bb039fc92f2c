"""``python -m onebyone`` is the ``onebyone`` command."""

from .cli import main

raise SystemExit(main())
