"""``python -m relaygate.dev.mock``: serve the mock upstream."""

from relaygate.dev.mock.app import main

main()
