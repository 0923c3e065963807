"""``python -m relaygate.cli``."""

from relaygate.cli import main

main()
