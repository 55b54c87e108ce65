"""Hand-made mutation pass over the layer, planner, frequency and export code.

Each mutant is a realistic bug written by hand (a boundary off by one, a
skipped block, a dropped guard). The runner copies the package into a
temporary folder, applies one mutant, runs the tests that should catch it
(`-x`, stop at the first failure) and reports whether the suite killed it.
A mutant that survives marks a hole in the tests.

    python tests/mutation/run_mutants.py             # every mutant
    python tests/mutation/run_mutants.py --only layer-head-membership

Not collected by pytest (it starts one pytest per mutant); docs/guarantees.md
lists the mutants and the last result.
"""

import argparse
import dataclasses
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
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
RERANK_TESTS = ["tests/frequency/test_frequency.py", "-k", "rerank or drift"]
CALLBACK_TESTS = ["tests/frequency/test_frequency.py", "-k",
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
    name: str
    path: str
    original: str
    mutated: str
    tests: list
    backend: str = "tensorflow"


MUTANTS = [
    Mutant("layer-tail-membership", LAYER,
           "member = ops.logical_and(member, ops.less(ranks, stop))",
           "member = ops.logical_and(member, ops.less_equal(ranks, stop))", LAYER_TESTS),
    Mutant("layer-tail-shift", LAYER,
           "rows = ranks - start if start else ranks", "rows = ranks", LAYER_TESTS),
    Mutant("layer-head-sentinel", LAYER,
           "rows = ops.mod(rows, head_rows + 1)",
           "rows = ops.mod(rows, head_rows)", LAYER_TESTS),
    Mutant("layer-concat-projection-order", LAYER,
           "ops.concatenate(projected, axis=-1)",
           "ops.concatenate(projected[::-1], axis=-1)", LAYER_TESTS),
    Mutant("layer-skip-last-block", LAYER,
           "for i in range(self._head_blocks, plan.num_blocks):",
           "for i in range(self._head_blocks, plan.num_blocks - 1):", LAYER_TESTS),
    Mutant("layer-row-clip", LAYER,
           "rows = ops.minimum(rows, stop - start - 1)",
           "rows = ops.minimum(rows, stop - start)", LAYER_TESTS),
    # the mean's count now lives in the one bag rule (layers/lookup.py)
    Mutant("layer-mean-counts-padding", LAYER,
           "coefficients = bag_coefficients(ops.greater_equal(ranks, 0), weights,",
           "coefficients = bag_coefficients(ops.greater_equal(ranks, -1), weights,",
           LAYER_TESTS),
    Mutant("layer-count-padding", LAYER,
           "        if self.mask_zero:\n            valid = ops.logical_and(valid, "
           "ops.not_equal(ids, 0))",
           "        if False:\n            valid = ops.logical_and(valid, "
           "ops.not_equal(ids, 0))", LAYER_TESTS),
    # add_lookup_counts lives with the layers' shared base (layers/lookup.py)
    Mutant("layer-count-overflow", "keras_mixed_dim/layers/lookup.py",
           "counts + ops.minimum(delta, headroom)", "counts + delta", LAYER_TESTS),
    Mutant("layer-remap-invalid", LAYER,
           "return ops.where(valid, ranks, ops.cast(-1, ranks.dtype))",
           "return ranks", LAYER_TESTS),
    Mutant("ids-float-fraction", IDS,
           "ops.equal(ids, ops.floor(ids))", "ops.equal(ids, ids)", LAYER_TESTS),
    # (`array <= input_dim` on the host is an equivalent mutant: the in-graph
    # rule still maps id input_dim to zeros; the host check exists to stop
    # the int32 cast from wrapping wide ids)
    Mutant("ids-host-wraps", IDS,
           "    valid = (array >= 0) & (array < input_dim)\n    return np.where(valid, "
           "array, -1).astype(np.int32)",
           "    valid = (array >= 0) & (array < input_dim)\n    return "
           "array.astype(np.int32)", LAYER_TESTS),
    Mutant("ids-graph-upper-bound", IDS,
           "ops.greater_equal(ids, 0), ops.less(ids, input_dim))\n    return",
           "ops.greater_equal(ids, 0), ops.less_equal(ids, input_dim))\n    return",
           LAYER_TESTS),
    Mutant("planner-mass-cut-side", BLOCKS,
           'np.searchsorted(cumulative, total * k / num_blocks, "left")',
           'np.searchsorted(cumulative, total * k / num_blocks, "right")',
           PLANNING_TESTS),
    Mutant("planner-projection-always-counted", BLOCKS,
           "projections = np.where(dims != output_dim, dims * output_dim, 0)",
           "projections = dims * output_dim", PLANNING_TESTS),
    Mutant("planner-huge-counts", BLOCKS, "return array / top", "return array",
           PLANNING_TESTS),
    Mutant("planner-round-multiple-floor", SOLVER,
           "np.round(dims / rule).astype(np.int64) * rule",
           "np.floor(dims / rule).astype(np.int64) * rule", PLANNING_TESTS),
    # (dropping `dims[0] = base_dim` is equivalent: lambda already makes the
    # anchor table exactly base_dim wide)
    Mutant("solver-base-dim-anchor", SOLVER,
           "lam = base_dim * sizes[0] ** alpha",
           "lam = base_dim * sizes[-1] ** alpha", PLANNING_TESTS),
    Mutant("rerank-slots-not-moved", RERANK,
           "new_slot[stay] = old_slot[old_ranks[ids[stay]] - offsets[b]]",
           "new_slot[stay] = 0", RERANK_TESTS),
    Mutant("rerank-ties-reversed", RERANK,
           "np.lexsort((old_ranks, -counts))", "np.lexsort((-old_ranks, -counts))",
           RERANK_TESTS),
    Mutant("callback-stale-test-function", CALLBACK,
           "    model.test_function = None\n    model.predict_function = None\n", "",
           CALLBACK_TESTS),
    Mutant("callback-late-check", CALLBACK,
           "    def on_train_begin(self, logs=None):", "    def _unused(self, logs=None):",
           CALLBACK_TESTS),
    # export, files and data
    Mutant("export-traced-in-training-mode", SAVEDMODEL,
           "outputs = model(inputs, training=False)", "outputs = model(inputs, training=True)",
           ["tests/export/test_savedmodel.py"]),
    Mutant("export-rank-unchecked", SAVEDMODEL,
           "tf.equal(tf.size(actual), len(dims))", "tf.constant(True)",
           ["tests/export/test_savedmodel.py"]),
    Mutant("versions-reservations-ignored", VERSIONS,
           "reserved = {owner[0] for p in", "reserved = set() and {owner[0] for p in",
           ["tests/export/test_versions.py"]),
    Mutant("versions-int64-unbounded", VERSIONS,
           "if number < 1 or number > MAX_VERSION:", "if number < 1:",
           ["tests/export/test_versions.py"]),
    Mutant("versions-stale-partials-kept", VERSIONS,
           "if _is_stale(path, _partial_owner(path), now, stale_after):", "if False:",
           ["tests/export/test_versions.py"]),
    Mutant("vocabulary-files-unverified", VOCABULARY_FILES,
           'if file_sha256(file) != entry["sha256"]:', "if False:",
           ["tests/datasets/criteo/test_vocabulary.py", "tests/datasets/movielens"]),
    Mutant("io-mkstemp-mode", IO_UTILS, "        os.fchmod(handle, file_mode())\n", "",
           ["tests/test_io_utils.py"]),
    Mutant("criteo-dense-abs", CRITEO_PREPROCESSING,
           "tf.math.log1p(tf.maximum(dense, 0.0))", "tf.math.log1p(tf.abs(dense))",
           ["tests/datasets/criteo/test_preprocessing.py"]),
    Mutant("criteo-sizes-unchecked", CRITEO_PREPROCESSING,
           "            if dim != size:", "            if False:",
           ["tests/export/test_example_models.py"]),
    Mutant("criteo-empty-data-cached", CRITEO_VOCABULARY,
           "    if result.rows == 0:", "    if False:",
           ["tests/datasets/criteo/test_vocabulary.py"]),
    Mutant("movielens-rating-floor-unchecked", MOVIELENS_READERS,
           "not rating_range[0] <= rating <= rating_range[1]", "rating > rating_range[1]",
           ["tests/datasets/movielens/test_readers.py"]),
    Mutant("export-binding-unchecked", EXPORT_SCRIPT,
           "    if expected != file_sha256(model_path):", "    if False:",
           ["tests/export/test_example_models.py"]),
    Mutant("rows-untouched-slots-written", SPARSE_ROWS,
           "row_ops.scatter_rows(target, rows, ops.where(mask, after, before))",
           "row_ops.scatter_rows(target, rows, after)",
           ROW_STEP_TESTS + ["tests/optimizers/test_sparse_rows.py"]),
    Mutant("jax-dense-read-dropped", JAX_ROWS,
           "dense = grads[position] if position in dense_reads else None",
           "dense = None", ROW_STEP_TESTS, backend="jax"),
    Mutant("jax-unique-padding-row-0", JAX_ROWS,
           "fill_value=num_rows,", "fill_value=0,", ROW_STEP_TESTS, backend="jax"),
    Mutant("torch-duplicates-not-summed", TORCH_ROWS,
           "return rows, summed.index_add_(0, inverse.reshape(-1), values)",
           "return rows, summed.index_copy_(0, inverse.reshape(-1), values)",
           ROW_STEP_TESTS, backend="torch"),
]

# Multi-hot bags (issue 23): the bag rule, the stacked bags, the ragged cut.
LOOKUP = "keras_mixed_dim/layers/lookup.py"
STACKED = "keras_mixed_dim/layers/stacked_embedding.py"
TF_BAGS = "keras_mixed_dim/backend/tensorflow/bags.py"
BAG_TESTS = ["tests/layers/test_lookup.py"]
MUTANTS += [
    Mutant("bag-mean-keeps-nonpositive-weights", LOOKUP,
           "keep = ops.logical_and(valid, ops.greater(weights, 0.0))", "keep = valid",
           BAG_TESTS),
    Mutant("bag-weights-of-padding-leak", LOOKUP,
           "coefficients = ops.where(keep, weights, 0.0)", "coefficients = weights",
           BAG_TESTS),
    Mutant("bag-sqrtn-without-root", LOOKUP,
           "        total = ops.sqrt(total)", "        total = total", BAG_TESTS),
    Mutant("bag-empty-divides-by-zero", LOOKUP,
           "total = ops.where(positive, total, 1.0)",
           "total = ops.where(positive, total, 0.0)", BAG_TESTS),
    Mutant("stacked-bag-members-interleaved", STACKED,
           "segments[np.arange(int(sizes.sum())), np.repeat(np.arange(len(sizes)), sizes)]",
           "segments[np.arange(int(sizes.sum())), np.arange(int(sizes.sum())) % len(sizes)]",
           BAG_TESTS),
    Mutant("ragged-cut-keeps-one-more", TF_BAGS,
           "inside = positions < tf.expand_dims(ragged.row_lengths(), 1)",
           "inside = positions <= tf.expand_dims(ragged.row_lengths(), 1)",
           ["tests/backend/tensorflow/test_bags.py"]),
]


# DynamicEmbedding (issue 24): the id map, the layer, the byte plan, serving.
DYNAMIC_MAP = "keras_mixed_dim/dynamic/id_map.py"
DYNAMIC_LAYER = "keras_mixed_dim/layers/dynamic_embedding.py"
DYNAMIC_TESTS = ["tests/dynamic/test_id_map.py", "tests/layers/test_dynamic_embedding.py"]
MUTANTS += [
    Mutant("dynamic-stale-tag-ignored", DYNAMIC_LAYER,
           "ops.logical_and(ops.equal(stored, tag), ops.greater(tag, 0))",
           "ops.greater(tag, 0)", DYNAMIC_TESTS),
    Mutant("dynamic-evicts-batch-keys", DYNAMIC_MAP,
           "pool = np.flatnonzero(self.used & ~touched)",
           "pool = np.flatnonzero(self.used)", DYNAMIC_TESTS),
    Mutant("dynamic-lfu-evicts-hotter", DYNAMIC_MAP,
           "m = int(np.cumprod(wins).sum())", "m = int(m)", DYNAMIC_TESTS),
    Mutant("dynamic-ttl-off-by-one", DYNAMIC_MAP,
           "self.last < now - self.ttl", "self.last <= now - self.ttl", DYNAMIC_TESTS),
    Mutant("dynamic-reused-row-keeps-slots", DYNAMIC_LAYER,
           "for slot in self._slots(optimizer, table):",
           "for slot in self._slots(optimizer, table)[:0]:", DYNAMIC_TESTS),
    Mutant("dynamic-plan-forgets-slots", "keras_mixed_dim/dynamic/plan.py",
           "self.float_params * FLOAT_BYTES * (1 + self.optimizer_slots)",
           "self.float_params * FLOAT_BYTES", DYNAMIC_TESTS),
    Mutant("dynamic-map-not-restored", DYNAMIC_LAYER,
           "        self.id_map.set_state(state)\n", "", DYNAMIC_TESTS),
    Mutant("dynamic-serving-pieces", "keras_mixed_dim/dynamic/serving.py",
           "tf.bitwise.right_shift(keys, shift)", "tf.bitwise.right_shift(keys, 0)",
           ["tests/dynamic/test_serving.py"]),
]


# Issue 21's test gaps in the sketch, distribution, compression, export and
# vocabulary-file code (each once let through by the whole suite).
PCA = "keras_mixed_dim/sketch/pca.py"
DISTRIBUTE = "keras_mixed_dim/distribute.py"
COMPRESS_MODEL = "keras_mixed_dim/compress/model.py"
SHARDED_PATHS_TESTS = ["tests/distribute/test_distribute.py", "-k", "sharded_table_paths"]
MUTANTS += [
    Mutant("pca-weighted-error-unweighted", PCA,
           "weighted_error += float(weights @ row_errors)",
           "weighted_error += float(row_errors.sum())", ["tests/sketch"]),
    Mutant("distribute-stacked-min-rows-strict", DISTRIBUTE,
           "if group.rows >= min_rows and", "if group.rows > min_rows and",
           SHARDED_PATHS_TESTS),
    Mutant("distribute-block-min-rows-strict", DISTRIBUTE,
           'block.storage == "full" and block.rows >= min_rows',
           'block.storage == "full" and block.rows > min_rows', SHARDED_PATHS_TESTS),
    Mutant("distribute-embedding-min-rows-strict", DISTRIBUTE,
           "if layer.input_dim >= min_rows and layer.input_dim % shards",
           "if layer.input_dim > min_rows and layer.input_dim % shards",
           SHARDED_PATHS_TESTS),
    Mutant("compress-min-rows-strict", COMPRESS_MODEL,
           "if layer.input_dim >= min_rows and layer.output_dim > 1]",
           "if layer.input_dim > min_rows and layer.output_dim > 1]",
           ["tests/compress/test_compress_model.py"]),
    Mutant("versions-explicit-ignores-reservation", VERSIONS,
           "elif version in taken or version in reserved:", "elif version in taken:",
           ["tests/export/test_versions.py"]),
    Mutant("vocabulary-files-flushed-chunk-unhashed", VOCABULARY_FILES,
           '                        data = "".join(buffer).encode()\n'
           "                        digest.update(data)\n",
           '                        data = "".join(buffer).encode()\n',
           ["tests/datasets/test_vocabulary_files.py"]),
    Mutant("vocabulary-files-carriage-return-kept", VOCABULARY_FILES,
           'if "\\t" in text or "\\n" in text or "\\r" in text:',
           'if "\\t" in text or "\\n" in text:',
           ["tests/datasets/test_vocabulary_files.py"]),
    # and of issue 21's fixes
    Mutant("quantized-stacked-scale-ignored",
           "keras_mixed_dim/layers/quantized_stacked_embedding.py",
           "values = ops.divide(values, ops.expand_dims(ops.take(scale, rows, axis=0), -1))",
           "values = values", ["tests/layers/test_quantized_stacked_embedding.py"]),
    Mutant("model-partials-of-dead-writers-kept", IO_UTILS,
           "if partial_is_stale(candidate, host, pid, now):", "if False:",
           ["tests/test_io_utils.py"]),
    Mutant("criteo-gzip-undetected", "keras_mixed_dim/datasets/criteo/format.py",
           "return file.read(2) == GZIP_MAGIC", "return False",
           ["tests/datasets/criteo/test_vocabulary.py"]),
]

# DynamicEmbedding's row writes inside the train step (dynamic_batches)
DYNAMIC_STREAM_TESTS = ["tests/dynamic/test_stream.py"]
MUTANTS += [
    Mutant("dynamic-step-keeps-slots", DYNAMIC_LAYER,
           "                _write_rows(slot, local, kept)", "                pass",
           DYNAMIC_STREAM_TESTS),
    Mutant("dynamic-step-tags-without-rows", DYNAMIC_LAYER,
           "            _write_rows(table, local, values)", "            pass",
           DYNAMIC_STREAM_TESTS),
    Mutant("dynamic-step-stale-source", DYNAMIC_LAYER,
           "-1 if int(source) in stale else int(source)", "int(source)",
           DYNAMIC_STREAM_TESTS),
    Mutant("dynamic-step-padding-clobbers", DYNAMIC_LAYER,
           "            writes[0, t] = rows[0]\n", "", DYNAMIC_STREAM_TESTS),
    Mutant("dynamic-deferred-not-restored", DYNAMIC_LAYER,
           'if name == "dirty" and f"id_map_{name}" not in store:',
           'if name == "dirty":', DYNAMIC_STREAM_TESTS),
]


# -- optimizer state, loss scaling, Keras's options, FTRL (issues 21 and 22) --
LOW_RANK = "keras_mixed_dim/optimizers/low_rank_gradients.py"
ROWS_TESTS = ["tests/optimizers/test_sparse_rows.py"]
MUTANTS += [
    Mutant("rows-touched-any-to-all", SPARSE_ROWS,
           "touched = ops.any(ops.not_equal(row_grads, 0), axis=1)",
           "touched = ops.all(ops.not_equal(row_grads, 0), axis=1)", ROWS_TESTS),
    Mutant("rows-table-grads-not-unscaled", SPARSE_ROWS,
           "table_pairs.append((_unscaled(grad, scale), variable))",
           "table_pairs.append((grad, variable))", ROWS_TESTS),
    Mutant("rows-constraints-dropped", SPARSE_ROWS,
           "    if variable.constraint is not None:\n"
           "        variable.assign(variable.constraint(variable))\n",
           "    return\n", ROWS_TESTS),
    Mutant("rows-qr-not-tables", SPARSE_ROWS,
           'r"(embeddings|block_\\d+_embeddings|block_\\d+_(quotient|remainder)"\n'
           '    r"|(quotient|remainder)_embeddings|stacked_.*_embeddings)"',
           'r"(embeddings|block_\\d+_embeddings"\n    r"|stacked_.*_embeddings)"',
           ROWS_TESTS),
    Mutant("rows-schedule-not-rebuilt", SPARSE_ROWS,
           'if isinstance(config.get("learning_rate"), dict):', "if False:", ROWS_TESTS),
    Mutant("rows-clipnorm-ignored", SPARSE_ROWS,
           "        if self.clipnorm:\n            norm =",
           "        if False:\n            norm =", ROWS_TESTS),
    Mutant("rows-weight-decay-dropped", SPARSE_ROWS,
           "if self.weight_decay and self._use_weight_decay(variable):", "if False:",
           ROWS_TESTS),
    Mutant("rows-ftrl-l1-dropped", SPARSE_ROWS,
           "weights = (ops.clip(linear, -l1, l1) - linear) / quadratic",
           "weights = -linear / quadratic", ROWS_TESTS),
    Mutant("rows-ftrl-reset-linear-zero", SPARSE_ROWS,
           'if self.table_optimizer != "ftrl" or not name.endswith("_linear"):',
           "if True:", RERANK_TESTS),
    # slot_variables moved to layers/slots.py (layers no longer import frequency)
    Mutant("rerank-per-row-slots-ignored", "keras_mixed_dim/layers/slots.py",
           "and tuple(v.shape[1:]) in ((), tuple(variable.shape[1:]))",
           "and tuple(v.shape[1:]) == tuple(variable.shape[1:])", RERANK_TESTS),
    Mutant("callback-inner-iterations-reset", CALLBACK,
           "            inner_new.iterations.assign(inner_old.iterations)",
           "            pass", ["tests/frequency/test_frequency.py", "-k",
                                "dense_optimizers_step"]),
    Mutant("low-rank-weight-decay-dropped", LOW_RANK,
           "            if decay:", "            if False:",
           ["tests/optimizers/test_low_rank_gradients.py"]),
    Mutant("low-rank-sign-fixup-dropped", LOW_RANK,
           "        q = q * ops.where(signs == 0, ops.ones_like(signs), signs)\n", "",
           ["tests/optimizers/test_low_rank_gradients.py"]),
]


def run(mutant, keep_going=False):
    with tempfile.TemporaryDirectory(prefix=f"mutant-{mutant.name}-") as folder:
        copy = pathlib.Path(folder)
        for part in ("keras_mixed_dim", "tests", "examples", "export", "pyproject.toml"):
            source = ROOT / part
            if source.is_dir():
                shutil.copytree(source, copy / part,
                                ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(source, copy / part)
        target = copy / mutant.path
        text = target.read_text()
        if text.count(mutant.original) != 1:
            return "stale", 0.0  # the code changed: the mutant needs updating
        target.write_text(text.replace(mutant.original, mutant.mutated))
        env = dict(os.environ, PYTHONPATH=str(copy), KERAS_BACKEND=mutant.backend,
                   JAX_PLATFORMS="cpu")
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             *([] if keep_going else ["-x"]), *mutant.tests],
            cwd=copy, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        return ("killed" if result.returncode != 0 else "SURVIVED"), seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", help="mutant names")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    survived = 0
    print(f"{'mutant':<36} {'file':<45} {'result':>9} {'s':>6}", flush=True)
    for mutant in chosen:
        outcome, seconds = run(mutant)
        survived += outcome != "killed"
        print(f"{mutant.name:<36} {mutant.path:<45} {outcome:>9} {seconds:>6.0f}",
              flush=True)
    print(f"{len(chosen) - survived} of {len(chosen)} mutants killed")
    sys.exit(1 if survived else 0)


if __name__ == "__main__":
    main()
