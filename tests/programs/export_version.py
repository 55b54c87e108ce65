"""Exports through `write_version` while another process does the same:
`export_version.py BASE NAME GO_FILE SECONDS`; prints "ready", waits until
GO_FILE exists, then writes a version that takes SECONDS; prints the
version it got as JSON."""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from light_import import stub_packages  # noqa: E402

stub_packages("keras_mixed_dim", "keras_mixed_dim.export")
from keras_mixed_dim.export.versions import write_version  # noqa: E402

base, name, go_file, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])


def write(path):
    os.makedirs(path)
    time.sleep(seconds)  # a SavedModel write takes a while
    with open(os.path.join(path, "saved_model.pb"), "w") as file:
        file.write(str(os.getpid()))


print("ready", flush=True)
while not os.path.exists(go_file):
    time.sleep(0.01)
path, version = write_version(base, name, write)
print(json.dumps({"version": version, "pid": os.getpid()}))
