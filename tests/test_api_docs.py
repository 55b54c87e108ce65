"""The public API's docstrings and its reference page, docs/api.md."""

import ast
import dataclasses
import importlib.util
import inspect
import os
import re
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _generator():
    spec = importlib.util.spec_from_file_location(
        "gen_api", os.path.join(ROOT, "docs", "gen_api.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _generator()
ENTRIES = GEN.public_names()
OBJECTS = {}
for _package, _name, _obj in ENTRIES:
    if GEN.is_documented_object(_obj):
        OBJECTS.setdefault((_name, id(_obj)), (f"{_package}.{_name}", _obj))


def _returns_something(obj):
    """Whether a function returns or yields a value (its own body, not that
    of functions nested in it)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(obj))).body[0]
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Yield, ast.YieldFrom)):
            return True
        if isinstance(node, ast.Return) and node.value is not None:
            return True
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            todo.extend(ast.iter_child_nodes(node))
    return False


_CASES = sorted(OBJECTS.values(), key=lambda e: e[0])


@pytest.mark.parametrize("qualname,obj", _CASES, ids=[q for q, _ in _CASES])
def test_docstring_has_args_returns_example(qualname, obj):
    doc = inspect.getdoc(obj) or ""
    assert doc.strip(), f"{qualname} has no docstring"
    lines = [line.strip() for line in doc.split("\n")]
    params = []
    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        params = [p for p in inspect.signature(target).parameters.values()
                  if p.name not in ("self", "cls")]
    except (TypeError, ValueError):
        pass
    if params:
        # A dataclass's fields are its arguments; "Attributes:" names them.
        sections = ("Args:", "Attributes:") if dataclasses.is_dataclass(obj) else ("Args:",)
        assert any(s in lines for s in sections), f"{qualname}: no Args: section"
    if not inspect.isclass(obj) and _returns_something(obj):
        assert "Returns:" in lines or "Yields:" in lines, f"{qualname}: no Returns: section"
    assert "Example:" in lines or "Examples:" in lines, f"{qualname}: no Example: section"


def test_constants_have_a_summary():
    for package, name, obj in ENTRIES:
        if not GEN.is_documented_object(obj):
            assert name in GEN.CONSTANTS, f"{package}.{name}: no summary in docs/gen_api.py"


def test_api_md_lists_every_public_name_and_nothing_else():
    with open(os.path.join(ROOT, "docs", "api.md"), encoding="utf-8") as f:
        text = f.read()
    headings = set(re.findall(r"^### `([\w.]+)`$", text, re.M))
    rows = {}
    for package in re.split(r"^## ", text, flags=re.M)[1:]:
        title = package.split("\n", 1)[0].strip("` ")
        rows[title] = set(re.findall(r"^\| \[`(\w+)`\]", package, re.M))
    expected = {}
    for package, name, _ in ENTRIES:
        expected.setdefault(package, set()).add(name)
    assert {k: v for k, v in rows.items() if v} == expected
    homes = GEN.home(ENTRIES)
    described = {f"{homes[GEN.key_of(p, n, o)]}.{n}" for p, n, o in ENTRIES}
    assert headings == described


def test_api_md_is_up_to_date():
    with open(os.path.join(ROOT, "docs", "api.md"), encoding="utf-8") as f:
        assert f.read() == GEN.render(), "run python docs/gen_api.py"


def _slug(heading):
    # GitHub's anchors: lower case, punctuation dropped, spaces to hyphens.
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_between_docs_resolve():
    pages = ["README.md"] + sorted(
        os.path.relpath(os.path.join(folder, name), ROOT)
        for folder, _, names in os.walk(os.path.join(ROOT, "docs"))
        for name in names if name.endswith(".md"))
    texts = {}
    for page in pages:
        with open(os.path.join(ROOT, page), encoding="utf-8") as f:
            texts[page] = f.read()
    anchors = {
        page: {_slug(h) for h in re.findall(r"^#+ (.*)$", re.sub(r"```.*?```", "", text, flags=re.S), re.M)}
        | set(re.findall(r'<a id="([^"]+)">', text))
        for page, text in texts.items()}
    broken = []
    for page, text in texts.items():
        for link in re.findall(r"\]\(([^)\s]+)\)", re.sub(r"```.*?```", "", text, flags=re.S)):
            if link.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, fragment = link.partition("#")
            target = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
            if not os.path.exists(os.path.join(ROOT, target)):
                broken.append(f"{page}: {link}")
            elif fragment and target in anchors and fragment not in anchors[target]:
                broken.append(f"{page}: {link}")
    assert not broken, broken
