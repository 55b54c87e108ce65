"""The examples' run harness: chief-only outputs, throughput and memory
meters, and a runner that starts an example in its own process.

Not part of the package: examples import it as `common` (their own folder
is first on `sys.path` when run as `python examples/NAME.py`).
"""
