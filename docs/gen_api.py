"""Writes docs/api.md, the public API reference, from the package's docstrings.

    python docs/gen_api.py            # rewrite docs/api.md
    python docs/gen_api.py --check    # exit 1 if docs/api.md is out of date

The public API is `keras_mixed_dim.__all__` and the `__all__` of every
subpackage. A name exported by several packages is described once, under
the package that defines it (the deepest one), and the others link there.
tests/test_api_docs.py checks that the file is up to date.
"""

import argparse
import importlib
import inspect
import os
import pkgutil
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
API_MD = os.path.join(ROOT, "docs", "api.md")

# Constants carry no docstring of their own; their one-line summaries live here.
CONSTANTS = {
    "__version__": "The package's version string.",
    "COMPRESSION_METHODS": "The embedding kinds `compress_model` converts to (name -> converter, a view of `keras_mixed_dim.models.kinds`; `register_method` adds one).",
    "EMBEDDING_KINDS": "The built-in embedding kinds of `keras_mixed_dim.models.kinds`, which `make_embedding`, `embedding_layers` and `--embedding` take.",
    "EVICTIONS": "The eviction policies `DynamicIdMap` accepts.",
    "MAX_VERSION": "The largest version number TF Serving accepts (int64 max).",
    "CHUNK_ROWS": "Rows of a tall matrix sketched per chunk.",
    "KINDS": "The sketch kinds `sketch` accepts.",
    "MAX_ERROR_RATIO": "Sketched PCA directions are kept when their rank-k error is at most this many times the exact optimum's.",
    "CATEGORICAL_NAMES": "Names of Criteo's 26 categorical columns, `C1` .. `C26`.",
    "DENSE_NAMES": "Names of Criteo's 13 integer columns, `I1` .. `I13`.",
    "KAGGLE_CARDINALITIES": "Distinct values of each categorical column in Criteo Kaggle.",
    "MLPERF_MULTI_HOT_SIZES": "Ids per example of each feature in MLPerf DLRM-DCNv2's multi-hot Criteo.",
    "NUM_CATEGORICAL": "Number of Criteo's categorical columns (26).",
    "NUM_DENSE": "Number of Criteo's integer columns (13).",
}

SECTIONS = ("Args:", "Returns:", "Raises:", "Example:", "Examples:", "Yields:",
            "Attributes:", "Call arguments:", "Input shape:", "Output shape:")


def public_packages():
    """Every package of keras_mixed_dim with an `__all__`, top level first."""
    import keras_mixed_dim

    names = ["keras_mixed_dim"]
    for info in pkgutil.walk_packages(keras_mixed_dim.__path__, "keras_mixed_dim."):
        if info.ispkg and ".backend" not in info.name:
            names.append(info.name)
    packages = []
    for name in sorted(names):
        module = importlib.import_module(name)
        if hasattr(module, "__all__"):
            packages.append(module)
    return packages


def public_names():
    """[(package name, public name, object)] over every `__all__`."""
    return [(p.__name__, n, getattr(p, n)) for p in public_packages() for n in p.__all__]


def is_documented_object(obj):
    return inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismethod(obj)


def home(entries):
    """Package that describes each object: the one that defines it, else the
    deepest that exports it."""
    def rank(package, obj):
        defined_in = getattr(obj, "__module__", "") if is_documented_object(obj) else ""
        return (defined_in.startswith(package + "."), package.count("."))

    homes = {}
    for package, name, obj in entries:
        key = key_of(package, name, obj)
        if key not in homes or rank(package, obj) > rank(homes[key], obj):
            homes[key] = package
    return homes


def key_of(package, name, obj):
    return (name, id(obj)) if is_documented_object(obj) else (package, name)


def anchor(package, name):
    return re.sub(r"[^a-z0-9_-]", "", f"{package}.{name}".lower().replace(".", "-"))


def summary(name, obj):
    if not is_documented_object(obj):
        return CONSTANTS[name]
    doc = inspect.getdoc(obj) or ""
    return doc.strip().split("\n\n")[0].replace("\n", " ")


def signature(name, obj):
    try:
        sig = str(inspect.signature(obj))
    except (TypeError, ValueError):
        sig = "(...)"
    prefix = "class " if inspect.isclass(obj) else ""
    return f"{prefix}{name}{sig}"


def render_docstring(doc):
    """Google-style docstring -> markdown: sections bold, args as a list,
    `>>>` examples fenced."""
    lines = doc.split("\n")
    out, i, section = [], 0, None
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped in SECTIONS:
            section = stripped
            out += [f"**{stripped[:-1]}**", ""]
            i += 1
            continue
        if stripped.startswith(">>>"):
            block = []
            while i < len(lines) and lines[i].strip():
                block.append(lines[i].strip() if lines[i].strip().startswith((">>>", "..."))
                             else lines[i].rstrip())
                i += 1
            code = [re.sub(r"^(>>>|\.\.\.) ?", "", b) if b.startswith((">>>", "..."))
                    else "# " + b.strip() for b in block]
            out += ["```python", *code, "```"]
            continue
        if section in ("Args:", "Attributes:", "Call arguments:", "Raises:") and line.startswith("    "):
            # One list item per argument; deeper-indented lines continue it.
            if not line.startswith("        ") and re.match(r"^    [\w*`][^:]*:", line):
                names, rest = stripped.split(":", 1)
                out.append(f"- `{names}`:{rest}" if "`" not in names else f"- {stripped}")
            else:
                out[-1] += " " + stripped
            i += 1
            continue
        if not stripped:
            if section in ("Args:", "Attributes:", "Call arguments:", "Raises:"):
                section = None
            out.append("")
        else:
            out.append(line[4:] if line.startswith("    ") else line)
        i += 1
    text = "\n".join(out)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def render():
    entries = public_names()
    homes = home(entries)
    out = [
        "# API reference",
        "",
        "Every public name of keras-mixed-dim: `keras_mixed_dim.__all__` and the",
        "`__all__` of each subpackage. A name exported by several packages is",
        "described under the package that defines it; the others link there.",
        "Generated from the docstrings by `python docs/gen_api.py`; do not edit by hand.",
        "",
    ]
    packages = []
    for package, name, obj in entries:
        if package not in packages:
            packages.append(package)
    out.append("## Contents")
    out.append("")
    for package in packages:
        out.append(f"* [`{package}`](#{anchor(package, 'package')})")
    out.append("")
    for package in packages:
        module = sys.modules[package]
        out += [f'<a id="{anchor(package, "package")}"></a>', "", f"## `{package}`", ""]
        doc = inspect.getdoc(module)
        if doc:
            out += [doc.split("\n\n")[0].replace("\n", " "), ""]
        out += ["| name | summary |", "|---|---|"]
        mine = []
        for p, name, obj in entries:
            if p != package:
                continue
            where = homes[key_of(p, name, obj)]
            link = anchor(where, name)
            text = summary(name, obj).replace("|", "\\|")
            if where != package:
                text += f" (see `{where}`)"
            else:
                mine.append((name, obj))
            out.append(f"| [`{name}`](#{link}) | {text} |")
        out.append("")
        for name, obj in mine:
            out += [f'<a id="{anchor(package, name)}"></a>', "", f"### `{package}.{name}`", ""]
            if not is_documented_object(obj):
                value = sorted(obj) if isinstance(obj, dict) else obj
                shown = f"keys {value!r}" if isinstance(obj, dict) else f"{name} = {value!r}"
                out += [f"`{shown}`", "", CONSTANTS[name], ""]
                continue
            out += ["```python", signature(name, obj), "```", "",
                    f"Defined in `{obj.__module__}`.", "",
                    render_docstring(inspect.getdoc(obj) or ""), ""]
    return "\n".join(out).rstrip() + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if docs/api.md differs from the docstrings")
    args = parser.parse_args()
    text = render()
    if args.check:
        with open(API_MD, encoding="utf-8") as f:
            if f.read() != text:
                sys.exit("docs/api.md is out of date: run python docs/gen_api.py")
        return
    tmp = API_MD + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, API_MD)


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    main()
