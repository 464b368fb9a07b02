"""``python -m bridge.mock``: the same as ``bridge mock``."""

from bridge.mock.cli import main

raise SystemExit(main())
