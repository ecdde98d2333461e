"""``python -m litomo``."""

from litomo.cli import main

main()
