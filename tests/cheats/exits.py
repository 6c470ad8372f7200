"""A plugin that ends the process at import (issue 21, item 5): refused like any import failure, exit 2."""

raise SystemExit(3)
