"""Starts a version write and waits forever inside it (the test kills it):
`export_killed.py BASE NAME`; prints "writing" once the partial folder exists."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from light_import import stub_packages  # noqa: E402

stub_packages("keras_mixed_dim", "keras_mixed_dim.export")
from keras_mixed_dim.export.versions import write_version  # noqa: E402


def write(path):
    os.makedirs(path)
    print("writing", flush=True)
    time.sleep(3600)


write_version(sys.argv[1], sys.argv[2], write)
