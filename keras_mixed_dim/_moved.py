"""Old module paths of 0.1, kept importable with a `DeprecationWarning`.

Version 0.2 gave each dataset its own package and put backend-specific code
under `backend/`. Importing an old path loads the new module under the old
name too, so `from keras_mixed_dim.datasets.criteo_vocab import
CriteoVocabulary` keeps working. Remove in 0.4.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    "keras_mixed_dim.datasets.criteo_format": "keras_mixed_dim.datasets.criteo.format",
    "keras_mixed_dim.datasets.criteo_vocab": "keras_mixed_dim.datasets.criteo.vocabulary",
    "keras_mixed_dim.datasets.criteo_tfds": "keras_mixed_dim.datasets.criteo.tfds",
    "keras_mixed_dim.datasets.synthetic_criteo": "keras_mixed_dim.datasets.criteo.synthetic",
    "keras_mixed_dim.datasets.movielens_tfds": "keras_mixed_dim.datasets.movielens.tfds",
    "keras_mixed_dim.datasets.synthetic_ratings": "keras_mixed_dim.datasets.movielens.synthetic",
    "keras_mixed_dim.datasets.ratings": "keras_mixed_dim.datasets.movielens.ratings",
    "keras_mixed_dim.datasets.tf_pipeline": "keras_mixed_dim.datasets.movielens.pipeline",
    "keras_mixed_dim.layers.gradients": "keras_mixed_dim.backend.tensorflow.gradients",
    "keras_mixed_dim.layers.tf_counting": "keras_mixed_dim.backend.tensorflow.counting",
    "keras_mixed_dim.multiworker": "keras_mixed_dim.backend.tensorflow.multiworker",
    "keras_mixed_dim.serving_check": "keras_mixed_dim.testing",
    "keras_mixed_dim.serving_check.capi": "keras_mixed_dim.testing.capi",
}


class _Alias(importlib.abc.Loader):
    def __init__(self, new_name):
        self.new_name = new_name

    def create_module(self, spec):
        return importlib.import_module(self.new_name)

    def exec_module(self, module):
        pass


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        new_name = MOVED.get(fullname)
        if new_name is None:
            return None
        warnings.warn(
            f"{fullname} moved to {new_name}; the old path will be removed in "
            "keras-mixed-dim 0.4.", DeprecationWarning, stacklevel=3)
        return importlib.util.spec_from_loader(
            fullname, _Alias(new_name),
            is_package=new_name == "keras_mixed_dim.testing")


def install():
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedFinder())
