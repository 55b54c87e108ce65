"""The package's layout rules, read from its source with `ast` (nothing is
imported, so this runs in well under a second on any backend):

* backend choices live under `keras_mixed_dim/backend/`: no module outside
  it asks Keras which backend runs (`keras.backend.backend()`,
  `keras.config.backend()`), and none imports JAX or PyTorch; a module
  outside it that imports TensorFlow says in its docstring (or its
  package's) that it is TensorFlow-only;
* the import graph of the package's modules has no cycle.
"""

import ast
import functools
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = "keras_mixed_dim"

# Modules still allowed to branch on the backend (none: a new entry needs a
# reason that the backend's folder cannot hold the branch).
BACKEND_BRANCH_ALLOWED = set()

FRAMEWORKS = ("tensorflow", "jax", "jaxlib", "torch")
TENSORFLOW_ONLY = ("tensorflow-only", "tensorflow only")


@functools.lru_cache(maxsize=None)
def parsed(source):
    return ast.parse(source)


def package_sources(root=ROOT):
    """`{module name: (path relative to root, source, is a package)}`."""
    sources = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        relative = path.relative_to(root)
        parts = list(relative.with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        sources[".".join(parts)] = (relative.as_posix(), path.read_text(), is_package)
    return sources


def backend_calls(source):
    """Line numbers of zero-argument calls of anything named `backend`
    (`keras.backend.backend()`, `keras.config.backend()`, `backend()`)."""
    lines = []
    for node in ast.walk(parsed(source)):
        if not isinstance(node, ast.Call) or node.args or node.keywords:
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if name == "backend":
            lines.append(node.lineno)
    return sorted(lines)


def imported_names(source, module, is_package):
    """Absolute names of every import in `source`, at any depth (imports
    inside functions count: they are part of the design, and moved to the
    top they would close the same loop)."""
    names = []
    for node in ast.walk(parsed(source)):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    parent = parent.rpartition(".")[0]
                base = f"{parent}.{base}" if base else parent
            names.extend(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph(sources):
    """Module -> the package's modules that importing it runs.

    `import a.b.c` (or `from a.b import c`) runs `a.b.c` and, first, the
    `__init__` of each enclosing package, so those are edges too; the
    importer's own enclosing packages are left out (they are being run
    already when it is imported).
    """
    graph = {}
    for module, (_, source, is_package) in sources.items():
        targets = set()
        for name in imported_names(source, module, is_package):
            if name != PACKAGE and not name.startswith(PACKAGE + "."):
                continue
            while name not in sources:  # `from a.b import function`
                name = name.rpartition(".")[0]
            while name and name != module and not module.startswith(name + "."):
                targets.add(name)
                name = name.rpartition(".")[0]
        graph[module] = targets
    return graph


def find_cycle(graph):
    """One cycle of `graph` as a list of nodes (first == last), or None."""
    state = {}
    for start in sorted(graph):
        if start in state:
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = "open"
        while stack:
            step = next(stack[-1], None)
            if step is None:
                state[path.pop()] = "done"
                stack.pop()
            elif state.get(step) == "open":
                return path[path.index(step):] + [step]
            elif step not in state:
                state[step] = "open"
                path.append(step)
                stack.append(iter(sorted(graph.get(step, ()))))
    return None


def test_no_backend_branch_outside_backend():
    found = []
    for relative, source, _ in package_sources().values():
        if relative.startswith(f"{PACKAGE}/backend/") or relative in BACKEND_BRANCH_ALLOWED:
            continue
        found += [f"{relative}:{line}" for line in backend_calls(source)]
    assert not found, (
        "Backend-specific code belongs in keras_mixed_dim/backend/{tensorflow,jax,torch}/ "
        f"(exposed through keras_mixed_dim.backend); found backend() calls at {found}")


def test_allowed_backend_branches_still_exist():
    # an entry whose module no longer branches must leave the list
    sources = {relative: source for relative, source, _ in package_sources().values()}
    stale = [relative for relative in BACKEND_BRANCH_ALLOWED
             if relative not in sources or not backend_calls(sources[relative])]
    assert not stale, f"remove {stale} from BACKEND_BRANCH_ALLOWED"


def test_frameworks_imported_only_in_backend_or_tensorflow_only_modules():
    sources = package_sources()
    found = []
    for module, (relative, source, is_package) in sources.items():
        if relative.startswith(f"{PACKAGE}/backend/"):
            continue
        frameworks = {name.split(".")[0] for name in imported_names(source, module, is_package)}
        frameworks &= set(FRAMEWORKS)
        if not frameworks:
            continue
        docstrings = [ast.get_docstring(parsed(source)) or ""]
        package = module if is_package else module.rpartition(".")[0]
        docstrings.append(ast.get_docstring(parsed(sources[package][1])) or "")
        says_tensorflow_only = any(marker in " ".join(d.lower().split())
                                   for d in docstrings for marker in TENSORFLOW_ONLY)
        if frameworks != {"tensorflow"} or not says_tensorflow_only:
            found.append(f"{relative} imports {sorted(frameworks)}")
    assert not found, (
        "Only keras_mixed_dim/backend/ imports a backend's framework, and modules "
        "that import TensorFlow say 'TensorFlow-only' in their docstring: " + "; ".join(found))


def test_import_graph_has_no_cycle():
    cycle = find_cycle(import_graph(package_sources()))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checks_see_what_they_look_for(tmp_path):
    # the scanners themselves, on a tiny package with both faults
    assert backend_calls("import keras\nif keras.backend.backend() == 'jax':\n    pass\n"
                         "x = keras.config.backend()\n") == [2, 4]
    assert backend_calls("keras.backend.standardize_dtype('int32')\n") == []
    package = tmp_path / PACKAGE
    (package / "a").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a" / "__init__.py").write_text("from keras_mixed_dim.a.x import f\n")
    (package / "a" / "x.py").write_text("def f():\n    from keras_mixed_dim.b import g\n")
    (package / "b.py").write_text("from .a import x\n")
    graph = import_graph(package_sources(tmp_path))
    assert graph["keras_mixed_dim.b"] == {"keras_mixed_dim.a", "keras_mixed_dim.a.x"}
    assert find_cycle(graph) in (
        ["keras_mixed_dim.a", "keras_mixed_dim.a.x", "keras_mixed_dim.b", "keras_mixed_dim.a"],
        ["keras_mixed_dim.a.x", "keras_mixed_dim.b", "keras_mixed_dim.a.x"])
    (package / "a" / "x.py").write_text("def f():\n    pass\n")
    assert find_cycle(import_graph(package_sources(tmp_path))) is None
