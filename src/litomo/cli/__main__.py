"""``python -m litomo.cli``."""

from litomo.cli import main

main()
