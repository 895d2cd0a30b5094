"""Performance measurements: ``python -m benchmarks [GROUP ...] [--json PATH]``."""
