"""Hand-made mutation pass over the layer, planner, frequency and export code.

Each mutant is a realistic bug written by hand (a boundary off by one, a
skipped block, a dropped guard), keyed by the function it lives in and a
small AST edit there (see "the engine" below), so that refactors elsewhere
leave it applicable. The runner copies the package into a temporary folder,
applies one mutant, runs the tests that should catch it (`-x`, stop at the
first failure) and reports whether the suite killed it. A mutant that
survives marks a hole in the tests; one whose function or node is gone is
"stale" and must be translated to the new code.

    python tests/mutation/run_mutants.py             # every mutant
    python tests/mutation/run_mutants.py --only layer-head-membership
    python tests/mutation/run_mutants.py --check     # apply each, run no test

Not collected by pytest (it starts one pytest per mutant); docs/guarantees.md
lists the mutants and the last result.
"""

import argparse
import ast
import dataclasses
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- the engine
# A mutant names a function and a small edit inside it, never a line or an
# exact string of the file: formatting, comments, moved or renamed
# neighbours leave it applicable. The edit finds its node by normalized
# source (`ast.unparse`: quotes, spacing and line wrapping don't matter)
# within that function only, and rewrites just that node's characters, so
# the rest of the file stays byte-identical. When the function or the node
# is gone, or the node is no longer unique, the mutant is "stale": it needs
# translating, and the run says so instead of passing.


class Stale(Exception):
    """The mutant's function or node is not (uniquely) in the file any more."""


@dataclasses.dataclass(frozen=True)
class Edit:
    """Replaces the expression or statement whose normalized source is `old`
    (the `nth` match in source order when `nth` is given, else the only
    one) by `new`; `new=None` drops the statement."""
    old: str
    new: str | None
    nth: int | None = None


@dataclasses.dataclass(frozen=True)
class RenameDef:
    """Renames the mutant's function itself (a hook its caller then misses)."""
    new: str


@dataclasses.dataclass(frozen=True)
class IfTest:
    """Replaces the condition `old` of an `if` or `while` statement (the only
    one with that condition in the function) by `new`."""
    old: str
    new: str


@dataclasses.dataclass(frozen=True)
class StringPart:
    """Replaces `old` by `new` inside the one string constant of the function
    that contains `old` (a long pattern, edited in one place)."""
    old: str
    new: str


def swap(old, new, nth=None):
    return Edit(old, new, nth)


def drop(statement, nth=None):
    return Edit(statement, None, nth)


def if_test(old, new):
    return IfTest(old, new)


def in_string(old, new):
    return StringPart(old, new)


def rename_def(new):
    return RenameDef(new)


def _parsed(source):
    """The statements of `source`, or its one expression."""
    tree = ast.parse(textwrap.dedent(source))
    if len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr):
        return tree.body[0].value
    return tree.body


def _normalized(source):
    parsed = _parsed(source)
    return ast.unparse(parsed) if isinstance(parsed, ast.expr) else "\n".join(
        ast.unparse(s) for s in parsed)


def find_function(tree, qualname):
    """The def named by `qualname` ("Class.method", "outer.inner", "name");
    None names the module's top level."""
    if qualname is None:
        return tree
    scope = tree
    for part in qualname.split("."):
        found = [n for n in ast.iter_child_nodes(scope)
                 if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                 and n.name == part]
        if len(found) != 1:
            raise Stale(f"{len(found)} definitions of {part!r}")
        scope = found[0]
    return scope


def _nodes(function, old):
    parsed = _parsed(old)
    target = _normalized(old)
    # only nodes of the target's type are unparsed (an expression may also
    # stand as an expression statement)
    kind = (type(parsed), ast.Expr) if isinstance(parsed, ast.expr) else type(parsed[0])
    # an expression statement and its expression read the same: keep the statement
    inner = {id(n.value) for n in ast.walk(function) if isinstance(n, ast.Expr)}
    return [n for n in ast.walk(function)
            if isinstance(n, kind) and n is not function
            and id(n) not in inner and ast.unparse(n) == target]


def _put(tree, node, replacement):
    """Puts `replacement` (a node or a list of statements) where `node` is,
    in place; returns a function that undoes it."""
    for parent in ast.walk(tree):
        for field, value in ast.iter_fields(parent):
            if value is node:
                setattr(parent, field, replacement)
                return lambda: setattr(parent, field, value)
            if isinstance(value, list) and any(v is node for v in value):
                i = next(i for i, v in enumerate(value) if v is node)
                extra = replacement if isinstance(replacement, list) else [replacement]
                setattr(parent, field, value[:i] + extra + value[i + 1:])
                return lambda: setattr(parent, field, value)
    raise AssertionError("node not in tree")


def _splice(text, node, new, whole_lines=False):
    """`text` with the characters of `node` replaced by `new` (AST columns
    count UTF-8 bytes); continuation lines take the node's indentation."""
    lines = text.encode().splitlines(keepends=True)

    def offset(line, col):
        return sum(len(x) for x in lines[:line - 1]) + col

    data = b"".join(lines)
    start = offset(node.lineno, node.col_offset)
    stop = offset(node.end_lineno, node.end_col_offset)
    if whole_lines:
        start, stop = offset(node.lineno, 0), offset(node.end_lineno + 1, 0)
    indent = lines[node.lineno - 1][:node.col_offset]
    if indent.strip():  # the node starts mid-line: indent as its line does
        indent = indent[:len(indent) - len(indent.lstrip())]
    return (data[:start] + new.encode().replace(b"\n", b"\n" + indent)
            + data[stop:]).decode()


def _alone_on_its_lines(text, node):
    lines = text.encode().splitlines()
    before = lines[node.lineno - 1][:node.col_offset]
    after = lines[node.end_lineno - 1][node.end_col_offset:]
    return not before.strip() and (not after.strip() or after.strip().startswith(b"#"))


def apply_edit(text, qualname, edit):
    """`text` with `edit` made inside the def `qualname`; raises Stale."""
    tree = ast.parse(text)
    function = find_function(tree, qualname)
    if isinstance(edit, RenameDef):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            raise Stale(f"{qualname} is not a function")
        line = text.splitlines(keepends=True)[function.lineno - 1]
        head = re.sub(rf"\bdef\s+{re.escape(function.name)}\b", f"def {edit.new}", line, 1)
        if head == line:
            raise Stale(f"no `def {function.name}` on its first line")
        start = sum(len(x) for x in text.splitlines(keepends=True)[:function.lineno - 1])
        mutated = text[:start] + head + text[start + len(line):]
        function.name, old_name = edit.new, function.name
        wanted = ast.dump(tree)
        function.name = old_name
        return _checked(mutated, wanted, qualname)
    if isinstance(edit, IfTest):
        target = _normalized(edit.old)
        tests = [n.test for n in ast.walk(function) if isinstance(n, (ast.If, ast.While))
                 and ast.unparse(n.test) == target]
        if len(tests) != 1:
            raise Stale(f"{len(tests)} `if {target}:` in {qualname}")
        return _replaced(text, tree, qualname, tests[0], edit.new)
    if isinstance(edit, StringPart):
        strings = [n for n in ast.walk(function) if isinstance(n, ast.Constant)
                   and isinstance(n.value, str) and edit.old in n.value]
        if len(strings) != 1 or strings[0].value.count(edit.old) != 1:
            raise Stale(f"{len(strings)} strings with {edit.old!r} in {qualname}")
        value = strings[0].value.replace(edit.old, edit.new)
        return _replaced(text, tree, qualname, strings[0], repr(value))
    found = _nodes(function, edit.old)
    if edit.nth is None and len(found) != 1:
        raise Stale(f"{len(found)} nodes `{_normalized(edit.old)}` in {qualname}")
    if edit.nth is not None and edit.nth >= len(found):
        raise Stale(f"no node {edit.nth} `{_normalized(edit.old)}` in {qualname}")
    node = found[edit.nth or 0]
    if edit.new is None:
        if not isinstance(node, ast.stmt):
            raise Stale(f"`{edit.old}` is not a statement in {qualname}")
        siblings = next(v for p in ast.walk(function) for _, v in ast.iter_fields(p)
                        if isinstance(v, list) and any(s is node for s in v))
        if len(siblings) > 1 and _alone_on_its_lines(text, node):
            undo = _put(tree, node, [])
            wanted = ast.dump(tree)
            undo()
            return _checked(_splice(text, node, "", whole_lines=True), wanted, qualname)
        edit = Edit(edit.old, "pass", edit.nth)
    return _replaced(text, tree, qualname, node, edit.new)


def _replaced(text, tree, qualname, node, new_source):
    replacement = _parsed(new_source)
    if isinstance(node, ast.Expr) and isinstance(replacement, ast.expr):
        node = node.value
    if isinstance(node, ast.expr) != isinstance(replacement, ast.expr):
        raise Stale(f"`{ast.unparse(node)}` and `{new_source}` are not both "
                    f"expressions or statements in {qualname}")
    undo = _put(tree, node, replacement)
    wanted = ast.dump(tree)
    undo()
    new = _normalized(new_source)
    # parentheses only where precedence needs them
    for candidate in (new, f"({new})") if isinstance(node, ast.expr) else (new,):
        mutated = _splice(text, node, candidate)
        try:
            return _checked(mutated, wanted, qualname)
        except Stale:
            continue
    raise Stale(f"`{new}` does not fit where `{ast.unparse(node)}` is in {qualname}")


def _checked(mutated, wanted, qualname):
    """`mutated` if it parses to exactly the edited tree."""
    try:
        tree = ast.parse(mutated)
    except SyntaxError as error:
        raise Stale(f"the edit in {qualname} does not parse: {error}") from None
    if ast.dump(tree) != wanted:
        raise Stale(f"the edit in {qualname} changes more than its node")
    return mutated


# ---------------------------------------------------------------- the mutants
LAYER = "keras_mixed_dim/layers/mixed_dim_embedding.py"
IDS = "keras_mixed_dim/layers/ids.py"
BLOCKS = "keras_mixed_dim/planning/blocks.py"
SOLVER = "keras_mixed_dim/planning/solver.py"
RERANK = "keras_mixed_dim/frequency/rerank.py"
CALLBACK = "keras_mixed_dim/frequency/callback.py"
# The tests that target the lookup, the id rule and the counting: a mutant
# of those code paths must fail one of them (the file's slower training
# tests add nothing here).
LAYER_TESTS = ["tests/layers/test_mixed_dim_embedding.py", "-k",
               "lookup_paths or bad_ids or rank_one or saturate or padding or "
               "out_of_range or combiner or no_valid_id or each_block or saturates or float_id or int_id"]
PLANNING_TESTS = ["tests/planning"]
RERANK_TESTS = ["tests/frequency/test_rerank.py", "tests/frequency/test_callback.py",
                "-k", "rerank or drift"]
CALLBACK_TESTS = ["tests/frequency/test_callback.py", "-k",
                  "compiled_function or counting_layer or errors_are_clear"]
SAVEDMODEL = "keras_mixed_dim/export/savedmodel.py"
VERSIONS = "keras_mixed_dim/export/versions.py"
VOCABULARY_FILES = "keras_mixed_dim/datasets/vocabulary_files.py"
IO_UTILS = "keras_mixed_dim/io_utils.py"
CRITEO_PREPROCESSING = "keras_mixed_dim/datasets/criteo/preprocessing.py"
CRITEO_VOCABULARY = "keras_mixed_dim/datasets/criteo/vocabulary.py"
MOVIELENS_READERS = "keras_mixed_dim/datasets/movielens/readers.py"
EXPORT_SCRIPT = "export/export_model.py"
SPARSE_ROWS = "keras_mixed_dim/optimizers/sparse_rows.py"
JAX_ROWS = "keras_mixed_dim/backend/jax/sparse_rows.py"
TORCH_ROWS = "keras_mixed_dim/backend/torch/sparse_rows.py"
ROW_STEP_TESTS = ["tests/optimizers/test_sparse_row_steps.py"]


@dataclasses.dataclass
class Mutant:
    """`edits` (one edit or a tuple) made inside `function` ("Class.method",
    "name"; None for the module's top level) of the file `path`."""
    name: str
    path: str
    function: str | None
    edits: object
    tests: list
    backend: str = "tensorflow"

    def apply(self, text):
        """The mutated source; raises Stale."""
        edits = self.edits if isinstance(self.edits, tuple) else (self.edits,)
        for edit in edits:
            text = apply_edit(text, self.function, edit)
        return text


MUTANTS = [
    Mutant("layer-tail-membership", LAYER, "MixedDimEmbedding.lookup_ranks",
           swap("ops.less", "ops.less_equal"), LAYER_TESTS),
    Mutant("layer-tail-shift", LAYER, "MixedDimEmbedding.lookup_ranks",
           swap("ranks - start if start else ranks", "ranks"), LAYER_TESTS),
    Mutant("layer-head-sentinel", LAYER, "MixedDimEmbedding.lookup_ranks",
           swap("head_rows + 1", "head_rows"), LAYER_TESTS),
    Mutant("layer-concat-projection-order", LAYER, "MixedDimEmbedding.lookup_ranks",
           swap("ops.concatenate(projected, axis=-1)",
                "ops.concatenate(projected[::-1], axis=-1)"),
           LAYER_TESTS),
    Mutant("layer-skip-last-block", LAYER, "MixedDimEmbedding.lookup_ranks",
           swap("plan.num_blocks", "plan.num_blocks - 1"), LAYER_TESTS),
    Mutant("layer-row-clip", LAYER, "MixedDimEmbedding.lookup_ranks",
           swap("stop - start - 1", "stop - start"), LAYER_TESTS),
    # the mean's count now lives in the one bag rule (layers/lookup.py)
    Mutant("layer-mean-counts-padding", LAYER, "MixedDimEmbedding.lookup_ranks",
           swap("ops.greater_equal(ranks, 0)", "ops.greater_equal(ranks, -1)"), LAYER_TESTS),
    Mutant("layer-count-padding", LAYER, "MixedDimEmbedding._count",
           swap("self.mask_zero", "False"), LAYER_TESTS),
    Mutant("layer-count-overflow", "keras_mixed_dim/layers/lookup.py", "add_lookup_counts",
           swap("ops.minimum(delta, headroom)", "delta"), LAYER_TESTS),
    Mutant("layer-remap-invalid", LAYER, "MixedDimEmbedding._ranks_of_valid",
           swap("ops.where(valid, ranks, ops.cast(-1, ranks.dtype))", "ranks"), LAYER_TESTS),
    Mutant("ids-float-fraction", IDS, "valid_int_ids", swap("ops.floor(ids)", "ids"),
           LAYER_TESTS),
    # (`array <= input_dim` on the host is an equivalent mutant: the in-graph
    # rule still maps id input_dim to zeros; the host check exists to stop
    # the int32 cast from wrapping wide ids)
    Mutant("ids-host-wraps", IDS, "sanitize_numpy_ids",
           swap("return np.where(valid, array, -1).astype(np.int32)",
                "return array.astype(np.int32)", nth=0),
           LAYER_TESTS),
    Mutant("ids-graph-upper-bound", IDS, "valid_int_ids",
           swap("valid = ops.logical_and(ops.greater_equal(ids, 0), "
                "ops.less(ids, input_dim))",
                "valid = ops.logical_and(ops.greater_equal(ids, 0), "
                "ops.less_equal(ids, input_dim))"),
           LAYER_TESTS),
    Mutant("planner-mass-cut-side", BLOCKS, "equal_mass_boundaries",
           swap("'left'", "'right'"), PLANNING_TESTS),
    Mutant("planner-projection-always-counted", BLOCKS, "_block_dims.params_for",
           swap("np.where(dims != output_dim, dims * output_dim, 0)", "dims * output_dim"),
           PLANNING_TESTS),
    Mutant("planner-huge-counts", BLOCKS, "check_counts", swap("array / top", "array"),
           PLANNING_TESTS),
    Mutant("planner-round-multiple-floor", SOLVER, "round_dims_by",
           swap("np.round", "np.floor"), PLANNING_TESTS),
    # (dropping `dims[0] = base_dim` is equivalent: lambda already makes the
    # anchor table exactly base_dim wide)
    Mutant("solver-base-dim-anchor", SOLVER, "alpha_power_rule",
           swap("sizes[0]", "sizes[-1]"), PLANNING_TESTS),
    Mutant("rerank-slots-not-moved", RERANK, "rerank_arrays",
           swap("old_slot[old_ranks[ids[stay]] - offsets[b]]", "0"), RERANK_TESTS),
    Mutant("rerank-ties-reversed", RERANK, "new_ranking", swap("old_ranks", "-old_ranks"),
           RERANK_TESTS),
    Mutant("callback-stale-test-function", CALLBACK, "_rebuild_training",
           (drop("model.test_function = None"), drop("model.predict_function = None")),
           CALLBACK_TESTS),
    Mutant("callback-late-check", CALLBACK, "FrequencyRecount.on_train_begin",
           rename_def("_unused"), CALLBACK_TESTS),
    # export, files and data
    Mutant("export-traced-in-training-mode", SAVEDMODEL, "export_for_serving.serve",
           swap("False", "True"), ["tests/export/test_savedmodel.py"]),
    Mutant("export-rank-unchecked", SAVEDMODEL, "_checked",
           swap("tf.equal(tf.size(actual), len(dims))", "tf.constant(True)"),
           ["tests/export/test_savedmodel.py"]),
    Mutant("versions-reservations-ignored", VERSIONS, "_reserve",
           swap("(owner := _partial_owner(p)) is not None", "False"),
           ["tests/export/test_versions.py"]),
    Mutant("versions-int64-unbounded", VERSIONS, "check_version",
           swap("number < 1 or number > MAX_VERSION", "number < 1"),
           ["tests/export/test_versions.py"]),
    Mutant("versions-stale-partials-kept", VERSIONS, "clean_stale_partials",
           swap("_is_stale(path, _partial_owner(path), now, stale_after)", "False"),
           ["tests/export/test_versions.py"]),
    Mutant("vocabulary-files-unverified", VOCABULARY_FILES, "read_manifest",
           swap("file_sha256(file) != entry['sha256']", "False"),
           ["tests/datasets/criteo/test_vocabulary.py", "tests/datasets/movielens"]),
    Mutant("io-mkstemp-mode", IO_UTILS, "atomic_write_text",
           drop("os.fchmod(handle, file_mode())"), ["tests/test_io_utils.py"]),
    Mutant("criteo-dense-abs", CRITEO_PREPROCESSING, "transform_dense",
           swap("tf.maximum(dense, 0.0)", "tf.abs(dense)"),
           ["tests/datasets/criteo/test_preprocessing.py"]),
    Mutant("criteo-sizes-unchecked", CRITEO_PREPROCESSING, "CriteoPreprocessing.check_model",
           swap("dim != size", "False"), ["tests/export/test_example_models.py"]),
    Mutant("criteo-empty-data-cached", CRITEO_VOCABULARY, "build_or_load_vocabulary",
           swap("result.rows == 0", "False"), ["tests/datasets/criteo/test_vocabulary.py"]),
    Mutant("movielens-rating-floor-unchecked", MOVIELENS_READERS, "_parse",
           swap("not rating_range[0] <= rating <= rating_range[1]",
                "rating > rating_range[1]"),
           ["tests/datasets/movielens/test_readers.py"]),
    Mutant("export-binding-unchecked", EXPORT_SCRIPT, "check_binding",
           swap("expected != file_sha256(model_path)", "False"),
           ["tests/export/test_example_models.py"]),
    Mutant("rows-untouched-slots-written", SPARSE_ROWS, "SparseRowOptimizer._update_rows",
           swap("ops.where(mask, after, before)", "after"),
           ROW_STEP_TESTS + ["tests/optimizers/test_sparse_rows.py"]),
    Mutant("jax-dense-read-dropped", JAX_ROWS, "value_and_grad",
           swap("grads[position] if position in dense_reads else None", "None"),
           ROW_STEP_TESTS, backend="jax"),
    Mutant("jax-unique-padding-row-0", JAX_ROWS, "unique_rows", swap("num_rows", "0"),
           ROW_STEP_TESTS, backend="jax"),
    Mutant("torch-duplicates-not-summed", TORCH_ROWS, "unique_rows",
           swap("summed.index_add_", "summed.index_copy_"), ROW_STEP_TESTS, backend="torch"),
    Mutant("torch-row-step-never-armed", SPARSE_ROWS, "SparseRowOptimizer.scale_loss",
           drop("loss = backend.arm_row_step(self, loss)"),
           ROW_STEP_TESTS, backend="torch"),
    Mutant("tables-not-flagged", "keras_mixed_dim/backend/row_gradients.py", "flag_table",
           drop("setattr(variable, SPARSE_ROWS_ATTRIBUTE, True)"), ROW_STEP_TESTS),
]

# Multi-hot bags (issue 23): the bag rule, the stacked bags, the ragged cut.
LOOKUP = "keras_mixed_dim/layers/lookup.py"
STACKED = "keras_mixed_dim/layers/stacked_embedding.py"
TF_BAGS = "keras_mixed_dim/backend/tensorflow/bags.py"
BAG_TESTS = ["tests/layers/test_lookup.py"]
MUTANTS += [
    Mutant("bag-mean-keeps-nonpositive-weights", LOOKUP, "bag_coefficients",
           swap("ops.logical_and(valid, ops.greater(weights, 0.0))", "valid"), BAG_TESTS),
    Mutant("bag-weights-of-padding-leak", LOOKUP, "bag_coefficients",
           swap("ops.where(keep, weights, 0.0)", "weights"), BAG_TESTS),
    Mutant("bag-sqrtn-without-root", LOOKUP, "bag_coefficients",
           swap("ops.sqrt(total)", "total"), BAG_TESTS),
    Mutant("bag-empty-divides-by-zero", LOOKUP, "bag_coefficients", swap("1.0", "0.0"),
           BAG_TESTS),
    Mutant("stacked-bag-members-interleaved", STACKED, "_reduce_bags",
           swap("np.repeat(np.arange(len(sizes)), sizes)",
                "np.arange(int(sizes.sum())) % len(sizes)"),
           BAG_TESTS),
    Mutant("ragged-cut-keeps-one-more", TF_BAGS, "_pad",
           swap("positions < tf.expand_dims(ragged.row_lengths(), 1)",
                "positions <= tf.expand_dims(ragged.row_lengths(), 1)"),
           ["tests/backend/tensorflow/test_bags.py"]),
]


# DynamicEmbedding (issue 24): the id map, the layer, the byte plan, serving.
DYNAMIC_MAP = "keras_mixed_dim/dynamic/id_map.py"
DYNAMIC_LAYER = "keras_mixed_dim/layers/dynamic_embedding.py"
DYNAMIC_TESTS = ["tests/dynamic/test_id_map.py", "tests/layers/test_dynamic_embedding.py"]
MUTANTS += [
    Mutant("dynamic-stale-tag-ignored", DYNAMIC_LAYER, "DynamicEmbedding.call",
           swap("ops.logical_and(ops.equal(stored, tag), ops.greater(tag, 0))",
                "ops.greater(tag, 0)"),
           DYNAMIC_TESTS),
    Mutant("dynamic-evicts-batch-keys", DYNAMIC_MAP, "DynamicIdMap.update_found",
           swap("self.used & ~touched", "self.used"), DYNAMIC_TESTS),
    Mutant("dynamic-lfu-evicts-hotter", DYNAMIC_MAP, "DynamicIdMap.update_found",
           swap("wins.size if wins.all() else int(wins.argmin())", "m"), DYNAMIC_TESTS),
    Mutant("dynamic-ttl-off-by-one", DYNAMIC_MAP, "DynamicIdMap.update_found",
           swap("self.last < now - self.ttl", "self.last <= now - self.ttl"), DYNAMIC_TESTS),
    Mutant("dynamic-reused-row-keeps-slots", DYNAMIC_LAYER, "DynamicEmbedding._apply",
           swap("self._slots(optimizer, buffer)", "self._slots(optimizer, buffer)[:0]"),
           DYNAMIC_TESTS),
    Mutant("dynamic-plan-forgets-slots", "keras_mixed_dim/dynamic/plan.py",
           "DynamicPlan.bytes",
           swap("self.float_params * FLOAT_BYTES * (1 + self.optimizer_slots)",
                "self.float_params * FLOAT_BYTES"),
           DYNAMIC_TESTS),
    Mutant("dynamic-live-ids-ignored", "keras_mixed_dim/dynamic/plan.py", "live_ids_share",
           swap("max(default, wanted)", "default"), ["tests/dynamic/test_plan.py"]),
    Mutant("dynamic-live-ids-no-bisection", "keras_mixed_dim/dynamic/plan.py",
           "_live_ids_plan", swap(
               "best, low = plan_capacity(**options, fallback_share=middle), middle",
               "high = middle"),
           ["tests/dynamic/test_plan.py"]),
    Mutant("dynamic-wide-fallback-threshold", "keras_mixed_dim/dynamic/plan.py",
           "plan_capacity", swap(
               "fallback_buckets_per_live_id(plan, live_ids) < WIDE_FALLBACK_BELOW",
               "fallback_buckets_per_live_id(plan, live_ids) < 0.1"),
           ["tests/dynamic/test_plan.py"]),
    Mutant("dynamic-buckets-per-live-id-counts-all", "keras_mixed_dim/dynamic/plan.py",
           "fallback_buckets_per_live_id",
           swap("int(live_ids) - sum(plan.tier_rows)", "int(live_ids)"),
           ["tests/dynamic/test_plan.py"]),
    Mutant("dynamic-map-not-restored", DYNAMIC_LAYER, "DynamicEmbedding.load_own_variables",
           drop("self.id_map.set_state(state)"), DYNAMIC_TESTS),
    Mutant("dynamic-serving-pieces", "keras_mixed_dim/dynamic/serving.py",
           "DynamicServing.__call__",
           swap("tf.bitwise.right_shift(keys, shift)", "tf.bitwise.right_shift(keys, 0)"),
           ["tests/dynamic/test_serving.py"]),
]


# Issue 21's test gaps in the sketch, distribution, compression, export and
# vocabulary-file code (each once let through by the whole suite).
PCA = "keras_mixed_dim/sketch/pca.py"
DISTRIBUTE = "keras_mixed_dim/distribute.py"
COMPRESS_MODEL = "keras_mixed_dim/compress/model.py"
SHARDED_PATHS_TESTS = ["tests/test_distribute.py", "-k", "sharded_table_paths"]
MUTANTS += [
    Mutant("pca-weighted-error-unweighted", PCA, "_project",
           swap("weights @ row_errors", "row_errors.sum()"), ["tests/sketch"]),
    Mutant("distribute-stacked-min-rows-strict", DISTRIBUTE, "sharded_table_paths",
           swap("group.rows >= min_rows", "group.rows > min_rows"), SHARDED_PATHS_TESTS),
    Mutant("distribute-block-min-rows-strict", DISTRIBUTE, "sharded_table_paths",
           swap("block.rows >= min_rows", "block.rows > min_rows"), SHARDED_PATHS_TESTS),
    Mutant("distribute-embedding-min-rows-strict", DISTRIBUTE, "sharded_table_paths",
           swap("layer.input_dim >= min_rows", "layer.input_dim > min_rows"),
           SHARDED_PATHS_TESTS),
    Mutant("compress-min-rows-strict", COMPRESS_MODEL, "compress_model",
           swap("layer.input_dim >= min_rows", "layer.input_dim > min_rows"),
           ["tests/compress/test_model.py"]),
    Mutant("versions-explicit-ignores-reservation", VERSIONS, "_reserve",
           swap("version in taken or version in reserved", "version in taken"),
           ["tests/export/test_versions.py"]),
    Mutant("vocabulary-files-flushed-chunk-unhashed", VOCABULARY_FILES,
           "write_vocabulary_files", drop("digest.update(data)", nth=1),
           ["tests/datasets/test_vocabulary_files.py"]),
    Mutant("vocabulary-files-carriage-return-kept", VOCABULARY_FILES, "_check_value",
           swap("'\\t' in text or '\\n' in text or '\\r' in text",
                "'\\t' in text or '\\n' in text"),
           ["tests/datasets/test_vocabulary_files.py"]),
    # and of issue 21's fixes
    Mutant("quantized-stacked-scale-ignored",
           "keras_mixed_dim/layers/quantized_stacked_embedding.py",
           "QuantizedStackedEmbedding.read_rows",
           swap("ops.divide(values, ops.expand_dims(ops.take(scale, rows, "
                "axis=0), -1))",
                "values"),
           ["tests/layers/test_quantized_stacked_embedding.py"]),
    Mutant("model-partials-of-dead-writers-kept", IO_UTILS, "clean_stale_model_partials",
           swap("partial_is_stale(candidate, host, pid, now)", "False"),
           ["tests/test_io_utils.py"]),
    Mutant("criteo-gzip-undetected", "keras_mixed_dim/datasets/criteo/format.py", "is_gzip",
           swap("file.read(2) == GZIP_MAGIC", "False"),
           ["tests/datasets/criteo/test_vocabulary.py"]),
]

# DynamicEmbedding's row writes inside the train step (dynamic_batches)
DYNAMIC_STREAM_TESTS = ["tests/dynamic/test_stream.py"]
MUTANTS += [
    Mutant("dynamic-step-keeps-slots", DYNAMIC_LAYER, "DynamicEmbedding._graph_writes",
           swap("_write_rows(slot, buffer_rows, kept)", "pass"), DYNAMIC_STREAM_TESTS),
    Mutant("dynamic-step-tags-without-rows", DYNAMIC_LAYER, "DynamicEmbedding._graph_writes",
           swap("_write_rows(buffer, buffer_rows, written)", "pass"), DYNAMIC_STREAM_TESTS),
    # the same two on PyTorch's host path of the writes
    Mutant("dynamic-host-step-keeps-slots", "keras_mixed_dim/backend/torch/row_writes.py",
           "host_writes",
           swap("tensor.index_fill_(0, rows, fill)", "pass"),
           ["tests/backend/torch/test_row_writes.py", *DYNAMIC_STREAM_TESTS], backend="torch"),
    Mutant("dynamic-host-step-tags-without-rows", "keras_mixed_dim/backend/torch/row_writes.py",
           "host_writes", swap("buffer.value.index_copy_(0, rows, mapped)", "pass"),
           ["tests/backend/torch/test_row_writes.py", *DYNAMIC_STREAM_TESTS], backend="torch"),
    Mutant("dynamic-step-stale-source", DYNAMIC_LAYER, "DynamicEmbedding._write_entries",
           swap("np.where(_isin(changes.move_from, stale), -1, changes.move_from)",
                "changes.move_from"),
           DYNAMIC_STREAM_TESTS),
    Mutant("dynamic-step-padding-clobbers", DYNAMIC_LAYER, "_Mapped.pack",
           drop("writes[0, tiers[first]] = rows[first][:, None, :]"), DYNAMIC_STREAM_TESTS),
    Mutant("dynamic-deferred-not-restored", DYNAMIC_LAYER,
           "DynamicEmbedding.load_own_variables",
           swap("name == 'dirty' and f'id_map_{name}' not in store", "name == 'dirty'"),
           DYNAMIC_STREAM_TESTS),
]

# DynamicEmbedding's QR fallback, ragged bags, StackedEmbedding's int32 total
MUTANTS += [
    Mutant("dynamic-qr-fallback-swaps-factors", DYNAMIC_LAYER, "DynamicEmbedding._vectors",
           swap("{'fallback_quotient': quotient, 'fallback_remainder': remainder}",
                "{'fallback_quotient': remainder, 'fallback_remainder': quotient}"),
           DYNAMIC_TESTS),
    Mutant("dynamic-ragged-without-bag-size", DYNAMIC_LAYER, "DynamicEmbedding._keys_and_mask",
           if_test("self.bag_size is None", "False"), DYNAMIC_TESTS),
    Mutant("stacked-total-vocabulary-unchecked", "keras_mixed_dim/layers/stacked_embedding.py",
           "StackedEmbedding._set_plans",
           if_test("total > np.iinfo(np.int32).max", "False"), ["tests/layers/test_stacked_embedding.py"]),
]

# DynamicEmbedding under SparseRowOptimizer: flagged tables, fresh slots of written rows
MUTANTS += [
    Mutant("dynamic-tables-not-flagged", DYNAMIC_LAYER, "DynamicEmbedding.build",
           swap("flag_table(self.add_weight(shape=value.shape, initializer=_Constant(value), "
                "name=f'embeddings_{width}'))",
                "self.add_weight(shape=value.shape, initializer=_Constant(value), "
                "name=f'embeddings_{width}')"), DYNAMIC_TESTS),
    Mutant("dynamic-written-slots-zeroed", DYNAMIC_LAYER, "_fresh_slot_rows",
           swap("slot_initial_value(optimizer, slot)", "0.0"), DYNAMIC_TESTS),
    Mutant("dynamic-mask-by-product", DYNAMIC_LAYER, "DynamicEmbedding._vectors",
           swap("ops.where(keep, stacked, ops.zeros_like(stacked))",
                "stacked * ops.cast(keep, stacked.dtype)"), DYNAMIC_TESTS),
    Mutant("dynamic-row-wise-slot-mask-broadcast", DYNAMIC_LAYER,
           "DynamicEmbedding._graph_writes",
           swap("buffer_keep if len(kept.shape) == 2 else buffer_keep[:, 0]", "buffer_keep"),
           DYNAMIC_TESTS),
]


# -- optimizer state, loss scaling, Keras's options, FTRL (issues 21 and 22) --
LOW_RANK = "keras_mixed_dim/optimizers/low_rank_gradients.py"
ROWS_TESTS = ["tests/optimizers/test_sparse_rows.py"]
MUTANTS += [
    Mutant("rows-touched-any-to-all", SPARSE_ROWS, "SparseRowOptimizer._update_rows",
           swap("ops.any", "ops.all"), ROWS_TESTS),
    Mutant("rows-table-grads-not-unscaled", SPARSE_ROWS, "SparseRowOptimizer.apply",
           swap("(_unscaled(grad, scale), variable)", "(grad, variable)"), ROWS_TESTS),
    Mutant("rows-constraints-dropped", SPARSE_ROWS, "_constrain",
           if_test("variable.constraint is not None", "False"), ROWS_TESTS),
    Mutant("rows-qr-not-tables", "keras_mixed_dim/layers/qr_embedding.py", "QREmbedding.build",
           drop("flag_table(self.quotient_embeddings)"), ROWS_TESTS),
    Mutant("rows-schedule-not-rebuilt", SPARSE_ROWS, "SparseRowOptimizer.from_config",
           swap("isinstance(config.get('table_learning_rate'), dict)", "False"), ROWS_TESTS),
    Mutant("rows-clipnorm-ignored", SPARSE_ROWS, "SparseRowOptimizer._update_table",
           if_test("self.clipnorm", "False"), ROWS_TESTS),
    Mutant("rows-weight-decay-dropped", SPARSE_ROWS, "SparseRowOptimizer._row_update",
           swap("self.weight_decay and self._use_weight_decay(variable)", "False"),
           ROWS_TESTS),
    Mutant("rows-ftrl-l1-dropped", SPARSE_ROWS, "SparseRowOptimizer._ftrl_update",
           swap("ops.clip(linear, -l1, l1) - linear", "-linear"), ROWS_TESTS),
    Mutant("rows-ftrl-reset-linear-zero", SPARSE_ROWS, "SparseRowOptimizer.reset_slot_value",
           swap("self.table_optimizer != 'ftrl' or not name.endswith('_linear')", "True"),
           RERANK_TESTS),
    Mutant("rerank-per-row-slots-ignored", "keras_mixed_dim/layers/slots.py", "slot_variables",
           swap("tuple(v.shape[1:]) in ((), tuple(variable.shape[1:]))",
                "tuple(v.shape[1:]) == tuple(variable.shape[1:])"),
           RERANK_TESTS),
    Mutant("callback-inner-iterations-reset", CALLBACK, "_rebuild_training",
           swap("inner_new.iterations.assign(inner_old.iterations)", "pass"),
           ["tests/frequency/test_callback.py", "-k",
                                "dense_optimizers_step"]),
    Mutant("low-rank-weight-decay-dropped", LOW_RANK, "LowRankGradients.apply",
           if_test("decay", "False"), ["tests/optimizers/test_low_rank_gradients.py"]),
    Mutant("low-rank-sign-fixup-dropped", LOW_RANK, "tracked_basis",
           drop("q = q * ops.where(signs == 0, ops.ones_like(signs), signs)"),
           ["tests/optimizers/test_low_rank_gradients.py"]),
]


# Modules whose mirrored test files came with issue 25 (tests/<package path>/).
MUTANTS += [
    Mutant("ids-host-upper-bound-float", IDS, "sanitize_numpy_ids",
           swap("array < input_dim", "array <= input_dim", nth=0),
           ["tests/layers/test_ids.py"]),
    Mutant("ids-unsigned-wraps-negative", IDS, "valid_int_ids",
           swap("'int64' if dtype in ('uint32', 'uint64') else 'int32'", "'int32'"),
           ["tests/layers/test_ids.py"]),
    Mutant("quantized-scale-multiplies",
           "keras_mixed_dim/layers/quantized_mixed_dim_embedding.py",
           "QuantizedMixedDimEmbedding._dequantized",
           swap("ops.divide(values, ops.expand_dims(scale, -1))",
                "ops.multiply(values, ops.expand_dims(scale, -1))"),
           ["tests/layers/test_quantized_mixed_dim_embedding.py"]),
    Mutant("checks-stacked-first-feature-size", "keras_mixed_dim/export/checks.py",
           "embedding_input_dims", swap("layer.input_dims[feature]", "layer.input_dims[0]"),
           ["tests/export/test_checks.py"]),
    Mutant("warmup-one-request", "keras_mixed_dim/export/warmup.py", "write_warmup_requests",
           swap("range(copies)", "range(1)"), ["tests/export/test_warmup.py"]),
    Mutant("serving-writes-unchecked", "keras_mixed_dim/testing/savedmodel.py",
           "check_serving_graph", if_test("writes", "False"),
           ["tests/testing/test_savedmodel.py"]),
    Mutant("movielens-items-by-user-vocabulary",
           "keras_mixed_dim/datasets/movielens/preprocessing.py",
           "MovieLensPreprocessing.__call__",
           swap("self.item_lookup(features['item_id'])",
                "self.user_lookup(features['item_id'])"),
           ["tests/datasets/movielens/test_preprocessing.py"]),
    Mutant("movielens-pipeline-unshuffled", "keras_mixed_dim/datasets/movielens/pipeline.py",
           "ratings_dataset", if_test("shuffle", "False"),
           ["tests/datasets/movielens/test_pipeline.py"]),
    Mutant("dense-memory-embeddings-low-rank", "keras_mixed_dim/optimizers/dense_memory.py",
           "dense_memory_options", drop("exclude.extend((v.path for v in layer.weights))"),
           ["tests/optimizers/test_dense_memory.py"]),
    Mutant("tfds-ratings-from-timestamps", "keras_mixed_dim/datasets/movielens/tfds.py",
           "load_tfds", swap("arrays['user_rating']", "arrays['timestamp']"),
           ["tests/datasets/movielens/test_tfds.py"]),
    Mutant("capi-unknown-dim-unsigned", "keras_mixed_dim/testing/capi.py", "_tensor_info",
           swap("dv - (1 << 64) if dv >= 1 << 63 else dv", "dv"),
           ["tests/testing/test_capi.py"]),
]

# Integration (issue 25): a table must not take the slots of a table whose
# path extends its own (`items` and `items_2`).
MUTANTS += [
    Mutant("slots-longer-path-taken", "keras_mixed_dim/layers/slots.py", "slot_variables",
           swap("not any(v.name.startswith(p) for p in longer)", "True"),
           ["tests/layers/test_slots.py"]),
]

# Backend choices for sparse rows (issue 25 item 4, issue 22): the chosen
# PyTorch lookup, and keras.layers.Embedding read through it.
MUTANTS += [
    Mutant("torch-take-rows-always-dense", "keras_mixed_dim/backend/torch/ops.py",
           "take_rows", swap("gathered is None", "True"),
           ["tests/models/test_row_reads.py"], backend="torch"),
    Mutant("row-reads-negative-ids-unwrapped", "keras_mixed_dim/models/row_reads.py",
           "_row_call", swap("ops.add(inputs, self.input_dim)", "inputs"),
           ["tests/models/test_row_reads.py"], backend="torch"),
]

# Issue 22 review: PyTorch's arming holds for the backward pass of the
# scaled loss only.
MUTANTS += [
    Mutant("torch-arming-outlives-its-backward", TORCH_ROWS, "_RowLookup.backward",
           swap("optimizer.armed_backward == _graph_task()",
                "optimizer.armed_backward is not None"),
           ["tests/backend/torch/test_sparse_rows.py",
            "tests/optimizers/test_sparse_rows.py"], backend="torch"),
    # (the class: `learning_rate` names both the getter and the setter)
    Mutant("rows-learning-rate-set-ignored", SPARSE_ROWS, "SparseRowOptimizer",
           if_test("not self._own_learning_rate", "False"),
           ["tests/optimizers/test_sparse_rows.py"]),
]


# Plain SGD's row step on JAX without unique_rows (issue 22, section 4)
MUTANTS += [
    Mutant("jax-sgd-scatter-overwrites", JAX_ROWS, "scatter_sub_rows",
           swap("variable.value.at[jnp.reshape(indices, (-1,))].add("
                "-values.astype(variable.value.dtype), mode='drop')",
                "variable.value.at[jnp.reshape(indices, (-1,))].set("
                "-values.astype(variable.value.dtype), mode='drop')"),
           ["tests/backend/jax/test_sparse_rows.py"],
           backend="jax"),
    Mutant("rows-sgd-shortcut-for-every-optimizer", SPARSE_ROWS,
           "SparseRowOptimizer._prepare",
           if_test("self._plain_sgd() and hasattr(row_ops, 'scatter_sub_rows')",
                   "hasattr(row_ops, 'scatter_sub_rows')"),
           ROW_STEP_TESTS, backend="jax"),
]


# The fused serving lookup of StackedEmbedding (issue 22 section 4).
FUSED_TESTS = ["tests/layers/test_stacked_embedding.py::"
               "test_fused_lookup_equals_the_grouped_one_and_numpy"]
MUTANTS += [
    Mutant("fused-rank-reads-the-zero-row", STACKED, "FusedLookup.__init__",
           swap("(1 - block.start) * width", "(0 - block.start) * width"), FUSED_TESTS),
    Mutant("fused-block-upper-bound-dropped", STACKED, "FusedLookup.__call__",
           swap("ops.less(ranks, ops.convert_to_tensor(self.stop[:, None, :]))",
                "ops.greater_equal(ranks, 0)"), FUSED_TESTS),
    Mutant("fused-diagonal-block-bound-dropped", STACKED, "FusedLookup._block_diagonal",
           swap("ops.less(ranks, ops.convert_to_tensor(self.stop))",
                "ops.greater_equal(ranks, 0)"), FUSED_TESTS),
]


# The stacked training lookup of whole tables (issue 22, section 4)
TRAIN_WHOLE_TESTS = ["tests/layers/test_stacked_embedding.py::"
                     "test_training_lookup_of_whole_tables_equals_the_per_feature_layers"]
MUTANTS += [
    Mutant("stacked-train-permutation-not-inverted", STACKED,
           "StackedEmbedding._train_whole_tables",
           swap("np.argsort(order)", "order"), TRAIN_WHOLE_TESTS),
    Mutant("stacked-train-invalid-reads-head-row-0", STACKED,
           "StackedEmbedding._train_whole_tables",
           swap("ops.where(ops.greater_equal(head_ranks, 0), ops.add(head_ranks, "
                "ops.convert_to_tensor(starts)), zero_row)",
                "ops.where(ops.greater_equal(head_ranks, 0), ops.add(head_ranks, "
                "ops.convert_to_tensor(starts)), 0)"),
           TRAIN_WHOLE_TESTS),
    Mutant("stacked-train-invalid-rows-not-zeroed", STACKED,
           "StackedEmbedding._train_whole_tables",
           swap("ops.where(ops.expand_dims(valid, -1), self.read_rows(g, rows), 0.0)",
                "self.read_rows(g, rows)"), TRAIN_WHOLE_TESTS),
]


# TensorFlow's in-step writes (issue 24): no dense read of a gathered variable
MUTANTS += [
    Mutant("dynamic-tf-tags-read-whole", DYNAMIC_LAYER, "DynamicEmbedding._graph_writes",
           swap("take_rows(self.slot_tags, slots)", "ops.take(self.slot_tags, slots, axis=0)"),
           ["tests/layers/test_dynamic_embedding.py::"
            "test_a_traced_step_with_writes_reads_no_variable_of_the_layer_whole"]),
    Mutant("tf-write-rows-scatter-to-row-0", "keras_mixed_dim/backend/tensorflow/row_writes.py",
           "write_rows", swap("rows", "rows * 0", nth=0),
           ["tests/backend/tensorflow/test_row_writes.py"]),
]

# PyTorch's own DynamicEmbedding lookup and host writes (issue 24): the
# hand-written backward, the bitwise select, the written rows' source vectors.
TORCH_LOOKUP = "keras_mixed_dim/backend/torch/dynamic_lookup.py"
TORCH_LOOKUP_TESTS = ["tests/backend/torch/test_dynamic_lookup.py"]
MUTANTS += [
    Mutant("torch-lookup-shared-lane-gradient-dropped", TORCH_LOOKUP, "_Plan.backward",
           swap("lane + grads[t]", "lane"), TORCH_LOOKUP_TESTS, backend="torch"),
    Mutant("torch-lookup-projection-gradient-dropped", TORCH_LOOKUP, "_Plan.backward",
           swap("saved['masked'][:, :split].T @ reaching",
                "0.0 * (saved['masked'][:, :split].T @ reaching)"),
           TORCH_LOOKUP_TESTS, backend="torch"),
    Mutant("torch-lookup-qr-factor-gradients-unselected", TORCH_LOOKUP, "_Plan.backward",
           swap("_select(fallback * first[0], keep[:, lo:hi])", "fallback * first[0]"),
           TORCH_LOOKUP_TESTS, backend="torch"),
    Mutant("torch-lookup-mask-by-product", TORCH_LOOKUP, "_Plan.forward",
           swap("select(stacked, keep)", "stacked * (keep != 0)"),
           ["tests/layers/test_dynamic_embedding.py", *TORCH_LOOKUP_TESTS], backend="torch"),
    Mutant("torch-lookup-qr-quotient-unselected-forward", TORCH_LOOKUP, "_Plan.forward",
           swap("select(first[0], keep[:, lo:hi]) * first[1]", "first[0] * first[1]"),
           TORCH_LOOKUP_TESTS, backend="torch"),
    Mutant("torch-lookup-full-width-product-unguarded", TORCH_LOOKUP, "_Plan.forward",
           swap("select(masked[:, :split] @ projections, guard)",
                "masked[:, :split] @ projections"),
           TORCH_LOOKUP_TESTS, backend="torch"),
    Mutant("torch-lookup-projection-gradient-unguarded", TORCH_LOOKUP, "_Plan.backward",
           swap("_select(upstream, saved['guard'])", "upstream"),
           TORCH_LOOKUP_TESTS, backend="torch"),
    Mutant("torch-write-source-slot-zero-reads-fallback",
           "keras_mixed_dim/backend/torch/row_writes.py", "_source_reads",
           swap("sources >= 0", "sources > 0"),
           ["tests/backend/torch/test_row_writes.py"], backend="torch"),
]

# the portable lookup's QR product reads the quotient's lane only for
# fallback ids (issue 24): a diverged tier row sharing that lane
MUTANTS += [
    Mutant("dynamic-qr-quotient-lane-unselected", DYNAMIC_LAYER, "DynamicEmbedding._vectors",
           swap("ops.where(reads, first[0], ops.zeros_like(first[0])) * first[1]",
                "first[0] * first[1]"),
           ["tests/layers/test_dynamic_embedding.py::"
            "test_a_diverged_tier_row_gives_the_shared_qr_rows_no_nan_gradient"]),
]

# The host map of `dynamic_batches` hashes every layer's keys in one pass
# (issue 24, examples/s): layers join a pass only where they hash alike
JOINT_MAP_TESTS = ["tests/dynamic/test_stream.py::"
                   "test_the_stream_maps_every_layer_as_prepare_in_turn"]
MUTANTS += [
    Mutant("dynamic-joint-hash-ignores-range", "keras_mixed_dim/dynamic/stream.py",
           "joint_buckets",
           swap("(layer._hash.seed, layer.plan.fallback_range)", "layer._hash.seed"),
           JOINT_MAP_TESTS),
]

# `DynamicEmbedding._vectors` on JAX (issue 24): the portable lookup with the
# backend's ops for operands known to be in range
MUTANTS += [
    Mutant("lookup-tier-bound-read-below", "keras_mixed_dim/backend/portable.py",
           "count_bounds_reached",
           swap("keras.ops.greater_equal(x, bound)", "keras.ops.greater(x, bound)"),
           ["tests/backend/test_portable.py", "tests/layers/test_dynamic_embedding.py"],
           backend="jax"),
    Mutant("jax-in-range-rows-untapped", "keras_mixed_dim/backend/jax/ops.py",
           "take_rows_in_range", swap("sparse_rows.take_rows(table, rows)", "None"),
           ["tests/backend/jax/test_ops.py"], backend="jax"),
    # on TensorFlow, which runs the portable body (JAX's and PyTorch's slot
    # tables serve their calls, where it survived)
    Mutant("dynamic-lookup-unmasked", DYNAMIC_LAYER, "DynamicEmbedding._vectors",
           swap("ops.where(keep, stacked, ops.zeros_like(stacked))", "stacked"),
           DYNAMIC_TESTS),
    # TensorFlow's Bucketize compares in float32
    Mutant("tf-tier-bounds-in-float32", "keras_mixed_dim/backend/tensorflow/ops.py",
           "count_bounds_reached", swap("max(bounds) > _FLOAT32_EXACT", "False"),
           ["tests/backend/tensorflow/test_ops.py"]),
]

# tables read as float32 under a mixed policy, wherever Keras autocasts
MUTANTS += [
    Mutant("table-layer-autocast-reads", "keras_mixed_dim/layers/lookup.py",
           "TableLayer.add_weight", swap("autocast", "True"),
           ["tests/layers/test_qr_embedding.py", "tests/layers/test_dynamic_embedding.py"]),
]


# PyTorch's slot-table lookup and numpy host writes (issue 24, examples/s):
# the selects that keep a diverged row to its own ids, the rows kept as read,
# the sparse optimizer's lanes, the writes in numpy, the eigenvalue cut
TORCH_ROW_WRITES = "keras_mixed_dim/backend/torch/row_writes.py"
MUTANTS += [
    Mutant("torch-slot-lookup-unread-rows-reach-projection-gradient", TORCH_LOOKUP,
           "_SlotPlan.forward",
           swap("_select(piece, read[first:first + piece.shape[0]])", "piece.clone()"),
           TORCH_LOOKUP_TESTS, backend="torch"),
    Mutant("torch-slot-lookup-keeps-a-view-of-the-rows", TORCH_LOOKUP, "_SlotPlan.forward",
           swap("_select(piece, read[first:first + piece.shape[0]])", "piece"),
           TORCH_LOOKUP_TESTS, backend="torch"),
    Mutant("torch-slot-lookup-unread-rows-gradient-unselected", TORCH_LOOKUP,
           "_SlotPlan.backward",
           swap("_select(slot_rows @ matrix.T, read[first:first + piece.shape[0]])",
                "slot_rows @ matrix.T"), TORCH_LOOKUP_TESTS, backend="torch"),
    Mutant("torch-slot-lookup-admitted-ids-read-the-fallback", TORCH_LOOKUP,
           "_SlotPlan.forward", swap("valid & ~admitted", "valid"),
           TORCH_LOOKUP_TESTS, backend="torch"),
    Mutant("torch-slot-lookup-invalid-bucket-reads-the-fallback", TORCH_LOOKUP,
           "_SlotPlan.forward", swap("valid & ~admitted", "~admitted"),
           TORCH_LOOKUP_TESTS, backend="torch"),
    Mutant("torch-slot-lookup-ignores-sparse-owner", TORCH_LOOKUP, "_slot_plan_of",
           swap("any((owner is not None for owner in owners))", "False"),
           TORCH_LOOKUP_TESTS, backend="torch"),
    Mutant("torch-slot-lookup-off-the-cpu", TORCH_LOOKUP, "_slot_plan_of",
           swap("device.type != 'cpu'", "False"), TORCH_LOOKUP_TESTS, backend="torch"),
    Mutant("dynamic-numpy-step-keeps-slots", TORCH_ROW_WRITES, "_numpy_writes",
           drop("_numpy(slot)[rows] = fill(mapped) if callable(fill) else fill"),
           DYNAMIC_STREAM_TESTS, backend="torch"),
    Mutant("dynamic-numpy-step-tags-without-rows", TORCH_ROW_WRITES, "_numpy_writes",
           drop("arrays[b][rows] = mapped"), DYNAMIC_STREAM_TESTS, backend="torch"),
    Mutant("torch-numpy-pinv-cut-unsquared", TORCH_ROW_WRITES, "numpy_pinv",
           swap("values > 1e-12 * values[-1]", "values > 1e-06 * values[-1]"),
           ["tests/backend/torch/test_row_writes.py"], backend="torch"),
]


# PyTorch's host writes by torch ops (bfloat16 tables, other devices): the
# values of the numpy writes
MUTANTS += [
    Mutant("torch-numpy-writes-of-bfloat16", TORCH_ROW_WRITES, "host_writes",
           swap("NUMPY_WRITES and table.device.type == 'cpu' and table.dtype in _NUMPY_FLOATS",
                "NUMPY_WRITES and table.device.type == 'cpu'"),
           ["tests/backend/torch/test_row_writes.py"], backend="torch"),
    Mutant("torch-pinv-in-half-precision", TORCH_ROW_WRITES, "pinv",
           swap("matrix.float()", "matrix"),
           ["tests/backend/torch/test_row_writes.py"], backend="torch"),
    Mutant("torch-pinv-of-diverged-projection", TORCH_ROW_WRITES, "pinv",
           swap("not bool(torch.isfinite(matrix).all())", "False"),
           ["tests/backend/torch/test_row_writes.py"], backend="torch"),
]


# JAX's slot-table lookup (`keras_mixed_dim/backend/jax/dynamic_lookup.py`):
# what no id reads enters no product, admitted ids never read the fallback,
# a row step's tapped gathers keep the portable lookup
JAX_LOOKUP = "keras_mixed_dim/backend/jax/dynamic_lookup.py"
JAX_LOOKUP_TESTS = ["tests/backend/jax/test_dynamic_lookup.py"]
MUTANTS += [
    Mutant("jax-slot-lookup-unread-rows-reach-projection", JAX_LOOKUP, "_SlotPlan.forward",
           swap("jnp.where(kept, piece, jnp.zeros_like(piece))", "piece"),
           JAX_LOOKUP_TESTS, backend="jax"),
    Mutant("jax-slot-lookup-fallback-factors-unselected", JAX_LOOKUP, "_SlotPlan.forward",
           drop("gathered = jnp.where(jnp.tile(reads, len(rows))[:, None], gathered, "
                "jnp.zeros_like(gathered))"), JAX_LOOKUP_TESTS, backend="jax"),
    Mutant("jax-slot-lookup-admitted-ids-read-the-fallback", JAX_LOOKUP, "_SlotPlan.forward",
           swap("jnp.logical_and(valid, jnp.logical_not(admitted))", "valid"),
           JAX_LOOKUP_TESTS, backend="jax"),
    Mutant("jax-slot-lookup-gate-counts-bags", JAX_LOOKUP, "vectors",
           swap("SLOTS_PER_ID * count", "SLOTS_PER_ID * int(safe.shape[0])"),
           JAX_LOOKUP_TESTS, backend="jax"),
    Mutant("jax-slot-lookup-ignores-row-step-tap", JAX_LOOKUP, "vectors",
           swap("any((getattr(t, sparse_rows.TAP_ATTRIBUTE, None) is not None for t in tables))",
                "False"), JAX_LOOKUP_TESTS, backend="jax"),
]


# PyTorch's raw-torch reading of the packed ids (`unpack`, the call's
# prelude there): the tag check of the portable prelude
MUTANTS += [
    Mutant("torch-unpack-stale-tag-ignored", TORCH_LOOKUP, "unpack",
           swap("(safe == slot) & (stored == tag) & (tag > 0)", "(safe == slot) & (tag > 0)"),
           ["tests/layers/test_dynamic_embedding.py", *TORCH_LOOKUP_TESTS], backend="torch"),
]



# PyTorch's call of `DynamicEmbedding` without Keras's `__call__` inside an
# eager step (`direct_call`), and the numpy views its row writes keep
TORCH_DIRECT_TESTS = ["tests/backend/torch/test_dynamic_lookup.py::"
                      "test_direct_call_leaves_to_keras_what_it_does_not_serve",
                      "tests/backend/torch/test_dynamic_lookup.py::"
                      "test_inside_a_model_the_call_skips_keras_call_and_equals_it"]
MUTANTS += [
    Mutant("torch-direct-call-serves-the-outermost-call", TORCH_LOOKUP, "direct_call",
           swap("context is None", "False"), TORCH_DIRECT_TESTS, backend="torch"),
    Mutant("torch-direct-call-drops-the-input-mask", TORCH_LOOKUP, "direct_call",
           swap("getattr(inputs, '_keras_mask', None) is not None", "False"),
           TORCH_DIRECT_TESTS, backend="torch"),
    Mutant("torch-direct-call-takes-any-argument", TORCH_LOOKUP, "direct_call",
           swap("name not in _CALL_KEYWORDS and (name not in context_args or "
                "has_context_arg.get(name, False))", "False"),
           TORCH_DIRECT_TESTS, backend="torch"),
    Mutant("torch-direct-call-passes-training-on", TORCH_LOOKUP, "direct_call",
           swap("context.set_value(name, kwargs.pop(name))", "pass"),
           TORCH_DIRECT_TESTS, backend="torch"),
    Mutant("torch-direct-call-takes-numpy-weights", TORCH_LOOKUP, "direct_call",
           swap("value is not None and type(value) is not torch.Tensor", "False"),
           TORCH_DIRECT_TESTS, backend="torch"),
    Mutant("torch-direct-call-of-an-unbuilt-layer", TORCH_LOOKUP, "direct_call",
           swap("not layer.built", "False"), TORCH_DIRECT_TESTS, backend="torch"),
    Mutant("torch-direct-call-in-a-stateless-scope", TORCH_LOOKUP, "direct_call",
           swap("in_stateless_scope()", "False"), TORCH_DIRECT_TESTS, backend="torch"),
    Mutant("torch-direct-call-in-a-symbolic-scope", TORCH_LOOKUP, "direct_call",
           swap("in_symbolic_scope()", "False"), TORCH_DIRECT_TESTS, backend="torch"),
    Mutant("torch-direct-call-under-a-distribution", TORCH_LOOKUP, "direct_call",
           swap("global_state.get_global_attribute('distribution') is not None", "False"),
           TORCH_DIRECT_TESTS, backend="torch"),
    Mutant("torch-direct-call-skips-rematerialisation", TORCH_LOOKUP, "direct_call",
           swap("getattr(layer, '_remat_mode', None)", "False"), TORCH_DIRECT_TESTS, backend="torch"),
    Mutant("torch-direct-call-skips-the-activity-regulariser", TORCH_LOOKUP, "direct_call",
           swap("layer.activity_regularizer is not None", "False"), TORCH_DIRECT_TESTS,
           backend="torch"),
    Mutant("torch-direct-call-skips-torch-hooks", TORCH_LOOKUP, "direct_call",
           swap("_hooked(layer)", "False"), TORCH_DIRECT_TESTS, backend="torch"),
    Mutant("torch-direct-call-without-keras-internals", TORCH_LOOKUP, "direct_call",
           swap("_keras_scopes is None", "False"), TORCH_DIRECT_TESTS, backend="torch"),
    Mutant("torch-direct-call-of-two-inputs", TORCH_LOOKUP, "direct_call",
           swap("len(args) != 1", "False"), TORCH_DIRECT_TESTS, backend="torch"),
    Mutant("torch-layer-call-never-direct", DYNAMIC_LAYER, "DynamicEmbedding.__call__",
           swap("outputs is not None", "False"), TORCH_DIRECT_TESTS, backend="torch"),
    Mutant("torch-numpy-view-outlives-its-memory", TORCH_ROW_WRITES, "_numpy",
           swap("kept is None or kept[0] != pointer or kept[1].shape != tensor.shape",
                "kept is None"),
           ["tests/backend/torch/test_row_writes.py"], backend="torch"),
]

# the review of the dense reads and the direct call
MUTANTS += [
    Mutant("torch-direct-call-keeps-the-autocast-scope", TORCH_LOOKUP, "direct_call",
           swap("scope is not None and scope.dtype is not None", "False"),
           ["tests/backend/torch/test_dynamic_lookup.py::"
            "test_a_mixed_precision_models_writes_reset_the_optimizer_slots_as_keras_call"],
           backend="torch"),
    Mutant("torch-writes-reset-an-autocast-copy-of-the-slots", TORCH_ROW_WRITES, "host_writes",
           swap("slot._value", "slot.value"),
           ["tests/backend/torch/test_row_writes.py::"
            "test_a_mixed_precision_layers_torch_op_writes_reset_its_optimizer_slots"],
           backend="torch"),
    Mutant("torch-numpy-view-saved-with-its-tensor", TORCH_ROW_WRITES, "_View.__reduce__",
           rename_def("_unused"),
           ["tests/backend/torch/test_row_writes.py::"
            "test_a_saved_tensor_carries_no_copy_of_its_numpy_view"],
           backend="torch"),
    Mutant("torch-direct-call-skips-backward-hooks", TORCH_LOOKUP, "_hooked",
           swap("module._backward_hooks", "False"),
           ["tests/backend/torch/test_dynamic_lookup.py::"
            "test_direct_call_leaves_backward_hooks_and_a_compiled_module_to_torch"],
           backend="torch"),
    Mutant("torch-direct-call-skips-a-compiled-module", TORCH_LOOKUP, "_hooked",
           swap("getattr(module, '_compiled_call_impl', None) is not None", "False"),
           ["tests/backend/torch/test_dynamic_lookup.py::"
            "test_direct_call_leaves_backward_hooks_and_a_compiled_module_to_torch"],
           backend="torch"),
]


# the host map's cheaper paths at 4096 (issue 24, examples/s): dense ids
# counted, candidates ordered only as far as slots take them, the index
# searched among the batch's keys, tags without the modulus, the sketch's
# power-of-two width masked
HOST_MAP_TESTS = ["tests/dynamic/test_id_map.py", "tests/dynamic/test_sketch.py",
                  "tests/layers/test_dynamic_embedding.py::test_unique_equals_np_unique_on_dense_and_sparse_keys"]
MUTANTS += [
    Mutant("host-map-counts-sparse-keys", DYNAMIC_LAYER, "_unique",
           swap("span <= 2 * flat.size", "True"), HOST_MAP_TESTS),
    Mutant("host-map-first-by-drops-ties", DYNAMIC_MAP, "_first_by",
           swap("values <= threshold", "values < threshold"), HOST_MAP_TESTS),
    Mutant("host-map-find-distinct-unmatched", DYNAMIC_MAP, "DynamicIdMap.find_distinct",
           swap("keys[pos] == index", "keys[pos] >= index"), HOST_MAP_TESTS),
    Mutant("host-map-new-tags-off-by-one", DYNAMIC_MAP, "DynamicIdMap._new_tags",
           swap("self.next_tag + 1", "self.next_tag"), HOST_MAP_TESTS),
    Mutant("host-map-sketch-mask-full-width", "keras_mixed_dim/dynamic/sketch.py",
           "CountMinSketch._flat_columns",
           swap("np.uint64(self.width - 1)", "np.uint64(2 * self.width - 1)"), HOST_MAP_TESTS),
]

# TensorFlow's row writes refuse a tf.distribute variable by name
MUTANTS += [
    Mutant("tf-row-writes-take-a-mirrored-variable", "keras_mixed_dim/backend/tensorflow/row_writes.py",
           "_writable", swap("isinstance(value, tf.distribute.DistributedValues)", "False"),
           ["tests/backend/tensorflow/test_row_writes.py"]),
]



def run(mutant, keep_going=False):
    """("killed" | "SURVIVED" | "stale" | "error", seconds, why not run or errored)."""
    try:
        mutated = mutant.apply((ROOT / mutant.path).read_text())
    except Stale as error:
        return "stale", 0.0, str(error)
    with tempfile.TemporaryDirectory(prefix=f"mutant-{mutant.name}-") as folder:
        copy = pathlib.Path(folder)
        for part in ("keras_mixed_dim", "tests", "examples", "export", "pyproject.toml"):
            source = ROOT / part
            if source.is_dir():
                shutil.copytree(source, copy / part,
                                ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(source, copy / part)
        (copy / mutant.path).write_text(mutated)
        env = dict(os.environ, PYTHONPATH=str(copy), KERAS_BACKEND=mutant.backend,
                   JAX_PLATFORMS="cpu")
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             *([] if keep_going else ["-x"]), *mutant.tests],
            cwd=copy, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        # exit 5 (nothing collected) or 4 (bad arguments) is a broken mutant entry
        if result.returncode in (4, 5):
            return "stale", seconds, f"pytest exited {result.returncode}: no tests ran"
        # exit 2: collection failed; not a test catching the bug, so say why
        if result.returncode == 2:
            last = (result.stdout.strip().splitlines() or [""])[-1]
            return "error", seconds, f"pytest exited 2: {last}"
        return ("killed" if result.returncode != 0 else "SURVIVED"), seconds, ""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", help="mutant names")
    parser.add_argument("--check", action="store_true",
                        help="apply every mutant and report the stale ones; run no test")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    if args.only and len(chosen) != len(set(args.only)):
        parser.error(f"unknown mutants: {set(args.only) - {m.name for m in MUTANTS}}")
    outcomes = {"killed": 0, "SURVIVED": 0, "stale": 0, "error": 0}
    print(f"{'mutant':<40} {'file':<50} {'result':>9} {'s':>6}", flush=True)
    for mutant in chosen:
        if args.check:
            try:
                mutant.apply((ROOT / mutant.path).read_text())
                outcome, seconds, why = "applies", 0.0, ""
            except Stale as error:
                outcome, seconds, why = "stale", 0.0, str(error)
        else:
            outcome, seconds, why = run(mutant)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        print(f"{mutant.name:<40} {mutant.path:<50} {outcome:>9} {seconds:>6.0f}"
              + (f"  ({why})" if why else ""), flush=True)
    if args.check:
        print(f"{outcomes.get('applies', 0)} apply, {outcomes['stale']} stale "
              f"of {len(chosen)} mutants")
    else:
        print(f"{outcomes['killed']} killed, {outcomes['SURVIVED']} survived, "
              f"{outcomes['stale']} stale, {outcomes['error']} errors of "
              f"{len(chosen)} mutants")
    sys.exit(1 if outcomes["SURVIVED"] or outcomes["stale"] or outcomes["error"] else 0)


if __name__ == "__main__":
    main()

