"""Every module of keras_mixed_dim with logic has its tests at the mirrored
path: keras_mixed_dim/a/b.py -> tests/a/test_b.py, and a package's own
__init__.py (when it holds more than imports and names) ->
tests/a/test_a.py (tests/test_keras_mixed_dim.py for the top level)."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "keras_mixed_dim"
TESTS = pathlib.Path(__file__).resolve().parent

# Modules with logic whose mirrored file does not exist yet: their behaviour
# is tested through other files (noted) or not directly. The list may only
# shrink: the test below fails once a listed module gets its file, so the
# entry is removed with it.
NOT_YET_MIRRORED = set()


def has_logic(path):
    """Whether a module holds more than a docstring, imports and names
    bound to values (a pure re-export `__init__` or a constants module)."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.Assign, ast.AnnAssign)):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue
        return True
    return False


def mirrored_test(module):
    """tests/... path of the test file for `module` (relative to the package)."""
    module = pathlib.PurePosixPath(module)
    if module.name == "__init__.py":
        folder = module.parent
        name = folder.name or "keras_mixed_dim"
        return pathlib.PurePosixPath(folder, f"test_{name}.py")
    return module.with_name(f"test_{module.name}")


def modules_with_logic():
    return sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")
                  if "__pycache__" not in p.parts and has_logic(p))


def test_every_module_with_logic_has_its_mirrored_test_file():
    missing = [f"{m} -> tests/{mirrored_test(m)}" for m in modules_with_logic()
               if m not in NOT_YET_MIRRORED and not (TESTS / mirrored_test(m)).exists()]
    assert not missing, "modules without their mirrored test file:\n" + "\n".join(missing)


def test_the_not_yet_mirrored_list_only_names_modules_still_without_one():
    modules = set(modules_with_logic())
    assert NOT_YET_MIRRORED <= modules, NOT_YET_MIRRORED - modules
    done = [m for m in NOT_YET_MIRRORED if (TESTS / mirrored_test(m)).exists()]
    assert not done, f"remove from NOT_YET_MIRRORED: {done}"


def test_logic_and_mirrored_paths_are_read_as_documented(tmp_path):
    reexport = tmp_path / "reexport.py"
    reexport.write_text('"""Doc."""\n\nfrom a import b\n\n__all__ = ["b"]\nSIZE = 4\n')
    assert not has_logic(reexport)
    for body in ("def f():\n    pass\n", "if SIZE:\n    SIZE = 2\n", "print(1)\n"):
        (tmp_path / "logic.py").write_text(body)
        assert has_logic(tmp_path / "logic.py")
    assert str(mirrored_test("layers/lookup.py")) == "layers/test_lookup.py"
    assert str(mirrored_test("backend/__init__.py")) == "backend/test_backend.py"
    assert str(mirrored_test("__init__.py")) == "test_keras_mixed_dim.py"
    assert str(mirrored_test("io_utils.py")) == "test_io_utils.py"
