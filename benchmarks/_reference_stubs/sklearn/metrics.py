"""Empty stand-in (see run_reference.py)."""
