"""Makes `keras_mixed_dim.*` submodules importable without running the
package's `__init__` files (which import Keras and TensorFlow), for test
programs that only need numpy-level modules and must start fast."""

import pathlib
import sys
import types

ROOT = pathlib.Path(__file__).resolve().parents[2]


def stub_packages(*names):
    for name in names:
        module = types.ModuleType(name)
        module.__path__ = [str(ROOT / name.replace(".", "/"))]
        sys.modules[name] = module
