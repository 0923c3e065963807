from tests.e2e.conftest import stack  # noqa: F401  (same process harness as e2e)
