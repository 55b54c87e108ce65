"""The module paths of 0.1 keep working with a DeprecationWarning, and no
code of the repository still uses them."""

import importlib
import pathlib
import re
import sys

import pytest

import keras_mixed_dim  # noqa: F401  (installs the alias finder)
from keras_mixed_dim._moved import MOVED

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("old_name", sorted(MOVED))
def test_old_path_imports_the_new_module_with_a_warning(old_name, monkeypatch):
    new = importlib.import_module(MOVED[old_name])
    monkeypatch.delitem(sys.modules, old_name, raising=False)
    with pytest.warns(DeprecationWarning, match=re.escape(f"moved to {MOVED[old_name]}")):
        old = importlib.import_module(old_name)
    # the same module object, so classes compare equal and isinstance holds
    assert old is new
    public = [name for name in vars(new) if not name.startswith("_")]
    assert all(getattr(old, name) is getattr(new, name) for name in public)


def test_from_import_of_an_old_path_still_works(monkeypatch):
    monkeypatch.delitem(sys.modules, "keras_mixed_dim.datasets.criteo_vocab", raising=False)
    with pytest.warns(DeprecationWarning):
        from keras_mixed_dim.datasets.criteo_vocab import CriteoVocabulary
    from keras_mixed_dim.datasets.criteo.vocabulary import CriteoVocabulary as current

    assert CriteoVocabulary is current


def test_the_repository_uses_only_the_new_paths():
    pattern = re.compile("|".join(re.escape(name) + r"\b" for name in MOVED))
    offenders = []
    for folder in ("keras_mixed_dim", "examples", "export", "benchmarks", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name in ("_moved.py", "test_moved.py"):
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
