"""Streaming benchmark of `DynamicEmbedding`: progressive validation (each
batch is predicted, then trained on) over time-ordered streams of raw ids,
every method at equal bytes per feature (tables, projections, id maps,
counts, sketches and Adam's two slots all counted).

Methods, per feature:
  dynamic_md       DynamicEmbedding, three MD tiers (widths D, D/4, D/16) and
                   its default QR fallback (half the budget, width D/4)
  dynamic_uniform  DynamicEmbedding, one full-width tier (a TFRA-like table),
                   same fallback
  static           vocabulary of the most frequent ids of the first 10% of
                   the stream (as many as fit) + 10% of the rows as OOV buckets
  hashing          the hashing trick on the raw id's 64-bit hash
  qr               QREmbedding (mult) on the hash mod (rows / 2)**2

Streams:
  movielens  ml-100k `u.data` sorted by timestamp, raw user and item ids,
             rating regression (nothing known in advance)
  synthetic  simulated days with arrivals and departures of ids, drifting
             Zipf popularity and a planted model y = b_u + b_v + <u, v> / sqrt(8)
             + noise (each term of unit variance, fixed per raw id by its
             hash); ids are random 64-bit integers. Default size is scaled down for a
             shared 2-core machine; `--full` is the issue's size: about 100M
             distinct ids in all (50 days of 2M examples, 1M live ids per
             feature, 99% replaced each day: ~50M per feature), batch 4096.

Every step the dynamic layers' measured bytes (their variables, the
optimizer's real slots, the host map and sketch) are checked against
`capacity_bytes`; a breach stops the run.

    python benchmarks/bench_streaming.py --streams movielens synthetic \
        --budgets 16384 65536 --seeds 0 1 2
    python benchmarks/bench_streaming.py --streams synthetic --full \
        --budgets 65536 1048576 --seeds 0 1 2 --live-ids warmup   # ~100M ids
    python benchmarks/bench_streaming.py --summarize results.jsonl    # tables
"""

import argparse
import json
import math
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_mixed_dim import DynamicEmbedding  # noqa: E402
from keras_mixed_dim import QREmbedding  # noqa: E402
from keras_mixed_dim.dynamic import dynamic_batches  # noqa: E402
from keras_mixed_dim.dynamic.sketch import mix64  # noqa: E402

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
METHODS = ("dynamic_md", "dynamic_uniform", "static", "hashing", "qr")
FEATURES = ("user", "item")
ADAM_SLOTS = 2
# the counts' decay per step of 256 examples: a half-life of about 177k
# examples; the layer's `decay` is per step, so other batch sizes get the
# same half-life in examples (at 4096, 0.999 a step would keep a departed
# id's count for 16 times as many examples)
DECAY_PER_256 = 0.999
FLOAT = 4
VOCAB_ENTRY_BYTES = 16  # int64 key + int64 index of a static table


# ------------------------------------------------------------------ streams


def movielens_stream():
    path = SHARED / "movielens" / "ml-100k" / "u.data"
    if not path.exists():
        raise FileNotFoundError(f"ml-100k not found at {path}")
    data = np.loadtxt(path, dtype=np.int64)
    data = data[np.argsort(data[:, 3], kind="stable")]
    # centred on the rating scale's midpoint (known without the data)
    return {"user": data[:, 0], "item": data[:, 1]}, data[:, 2].astype(np.float32) - 3.0


def planted_vectors(keys, salt, dim=8):
    """A fixed random vector per raw id, from its hash (no table)."""
    columns = []
    for j in range(dim):
        u = (mix64(keys, salt * 1000 + j) >> np.uint64(11)).astype(np.float64) / 2.0**53
        columns.append(u)
    # uniform(0, 1) -> zero mean, unit variance
    return (np.stack(columns, axis=-1) - 0.5) * math.sqrt(12.0)


def synthetic_stream(days, per_day, active, churn, seed):
    """Days of examples: `active` live ids per feature, a `churn` share of
    them replaced each day (new ids enter at random ranks), popularity Zipf
    over a ranking that drifts (log-scores take Gaussian steps)."""
    rng = np.random.default_rng(seed)
    # filled in place: lists of days and a concatenation would hold the
    # stream twice (about 8 GB at --full's 200M examples)
    features = {f: np.empty(days * per_day, np.int64) for f in FEATURES}
    targets = np.empty(days * per_day, np.float32)
    pools = {f: rng.integers(-(2**63), 2**63 - 1, size=active, dtype=np.int64)
             for f in FEATURES}
    scores = {f: rng.normal(size=active) for f in FEATURES}
    distinct = {f: active for f in FEATURES}
    for day in range(days):
        today = slice(day * per_day, (day + 1) * per_day)
        picks = {}
        for f in FEATURES:
            ranks = np.argsort(np.argsort(-scores[f]))
            weights = 1.0 / (ranks + 1.0) ** 1.05
            picks[f] = pools[f][rng.choice(active, per_day, p=weights / weights.sum())]
            features[f][today] = picks[f]
        u = planted_vectors(picks["user"], 1)
        v = planted_vectors(picks["item"], 2)
        # per-id effects plus an interaction, each of unit variance
        bias = planted_vectors(picks["user"], 3, 1)[:, 0] + planted_vectors(
            picks["item"], 4, 1)[:, 0]
        targets[today] = (bias + np.sum(u * v, axis=1) / math.sqrt(8)
                          + 0.3 * rng.normal(size=per_day)).astype(np.float32)
        for f in FEATURES:
            scores[f] += 0.3 * rng.normal(size=active)
            leave = rng.random(active) < churn
            n = int(leave.sum())
            pools[f][leave] = rng.integers(-(2**63), 2**63 - 1, size=n, dtype=np.int64)
            scores[f][leave] = rng.normal(size=n) + 1.0  # newcomers start popular
            distinct[f] += n
    return features, targets, distinct


# ------------------------------------------------------------------ methods


def hashed(keys, buckets, salt=7):
    return (mix64(keys, salt) % np.uint64(buckets)).astype(np.int32)


class Feature:
    """One feature's embedding under one method: host mapping + layer."""

    def __init__(self, method, budget, dim, warmup_keys, seed, dynamic_options=None):
        self.method = method
        self.dynamic = method.startswith("dynamic")
        per_row = dim * FLOAT * (1 + ADAM_SLOTS)
        if self.dynamic:
            options = dict(dynamic_options or {})
            md_dims = options.pop("tier_dims", None)
            if options.get("live_ids") == "warmup":
                # as much as the static vocabulary is given: the warm-up's
                # distinct ids
                options["live_ids"] = max(1, int(np.unique(warmup_keys).size))
            if options.get("live_ids") is None:
                options.pop("live_ids", None)
            tier_dims = md_dims if method == "dynamic_md" else (dim,)
            # both popped: neither is a layer argument
            decay, batch = options.pop("decay", None), options.pop("batch", 256)
            decay = decay or DECAY_PER_256 ** (batch / 256)
            self.layer = DynamicEmbedding(dim, budget, min_count=2, eviction="lfu",
                                          tier_dims=tier_dims, decay=decay,
                                          rebalance_every=50, seed=seed, **options)
            self.live_ids = options.get("live_ids")
            self.bytes = self.layer.bytes
            self.shape = (3,)
        elif method == "static":
            rows = budget // per_row
            oov = max(1, rows // 10)
            unique, counts = np.unique(warmup_keys, return_counts=True)
            keep = unique[np.argsort(-counts, kind="stable")]
            # every kept id also costs its vocabulary entry
            size = min(keep.size, max(0, (budget - oov * per_row)
                                      // (per_row + VOCAB_ENTRY_BYTES)))
            self.vocab = np.sort(keep[:size])
            self.oov = oov
            self.layer = keras.layers.Embedding(size + oov, dim)
            self.bytes = (size + oov) * per_row + size * VOCAB_ENTRY_BYTES
            self.shape = ()
        elif method == "hashing":
            self.buckets = budget // per_row
            self.layer = keras.layers.Embedding(self.buckets, dim)
            self.bytes = self.buckets * per_row
            self.shape = ()
        elif method == "qr":
            rows = budget // per_row
            m = max(1, rows // 2)
            self.space = m * (rows - m)
            self.layer = QREmbedding(self.space, dim, num_collisions=m)
            self.bytes = self.layer.params * FLOAT * (1 + ADAM_SLOTS)
            self.shape = ()
        else:
            raise ValueError(f"unknown method {method!r}")
        if self.bytes > budget:
            raise AssertionError(f"{method} uses {self.bytes} > {budget} bytes")

    def lookup(self, keys):
        """Model input for prediction (no counting)."""
        if self.dynamic:
            return self.layer.lookup_ids(keys)
        return self._static_ids(keys)

    def update(self, keys, optimizer):
        """Model input for training (the dynamic map counts and grows)."""
        if self.dynamic:
            packed = self.layer.update(keys, optimizer=optimizer)
            self.check(optimizer)
            return packed
        return self._static_ids(keys)

    def check(self, optimizer):
        measured = self.layer.check_bytes(optimizer)
        if measured > self.layer.capacity_bytes:
            raise AssertionError("capacity exceeded")
        self.max_measured = max(getattr(self, "max_measured", 0), measured)

    def _static_ids(self, keys):
        if self.method == "static":
            pos = np.minimum(np.searchsorted(self.vocab, keys), max(self.vocab.size - 1, 0))
            found = (self.vocab[pos] == keys) if self.vocab.size else np.zeros(keys.shape, bool)
            return np.where(found, pos, self.vocab.size + hashed(keys, self.oov)).astype(np.int32)
        if self.method == "hashing":
            return hashed(keys, self.buckets)
        return hashed(keys, self.space)


JIT_COMPILE = "auto"


def build_model(features, dim, writes=False):
    inputs, vectors = {}, []
    for name, feature in features.items():
        inputs[name] = keras.Input(feature.shape, dtype="int32", name=name)
        if writes and feature.dynamic:
            inputs[name + "_writes"] = feature.layer.writes_input(name + "_writes")
            vectors.append(feature.layer(inputs[name], writes=inputs[name + "_writes"]))
        else:
            vectors.append(feature.layer(inputs[name]))
    u, v = vectors
    x = keras.layers.Concatenate()([u, v, keras.layers.Multiply()([u, v])])
    x = keras.layers.Dense(32, activation="relu")(x)
    model = keras.Model(inputs, keras.layers.Dense(1)(x))
    model.compile(keras.optimizers.Adam(0.005), "mse", jit_compile=JIT_COMPILE)
    return model


class _Clock(keras.callbacks.Callback):
    """Seconds from the start of batch `timed_from` to the end of `fit`."""

    def __init__(self, timed_from):
        super().__init__()
        self.timed_from, self.start, self.steps = timed_from, None, 0

    def on_train_batch_begin(self, batch, logs=None):
        if batch == self.timed_from:
            self.start = time.perf_counter()
            self.cpu_start = time.process_time()

    def on_train_batch_end(self, batch, logs=None):
        self.steps = batch + 1

    def on_train_end(self, logs=None):
        self.seconds = time.perf_counter() - self.start
        # CPU seconds of every thread of the process (input pipeline
        # included): steadier than wall time on a shared machine
        self.cpu_seconds = time.process_time() - self.cpu_start


def run_fit(stream, targets, features, method, budget, dim, batch, seed):
    """One `model.fit` over the whole stream (`dynamic_batches`): the ids are
    mapped in the input pipeline and the row writes run in the train step.
    The epoch's training loss is the progressive loss: each batch's loss is
    computed before the step trains on it (after its admissions)."""
    model = build_model(features, dim, writes=True)
    n = targets.size

    def source():
        for lo in range(0, n - batch + 1, batch):
            yield {f: stream[f][lo:lo + batch] for f in FEATURES}, targets[lo:lo + batch, None]

    dynamic = {f: features[f].layer for f in FEATURES if features[f].dynamic}
    if dynamic:
        batches = dynamic_batches(source(), dynamic, model)
    else:
        batches = (({f: features[f].lookup(x[f]) for f in FEATURES}, y) for x, y in source())

    def checked(batches):
        for x, y in batches:
            for f in dynamic:
                features[f].check(model.optimizer)
            yield x, y

    clock = _Clock(5)
    history = model.fit(checked(batches), epochs=1, verbose=0, callbacks=[clock])
    examples = (clock.steps - 5) * batch
    model.cpu_examples_per_s = examples / clock.cpu_seconds
    return model, history.history["loss"][0], examples / clock.seconds


def run(stream, targets, method, budget, dim, batch, seed, warmup_share=0.1, feed="fit",
        dynamic_options=None):
    keras.utils.set_random_seed(seed)
    n = targets.size
    warm = int(n * warmup_share)
    features = {f: Feature(method, budget, dim, stream[f][:warm], seed, dynamic_options)
                for f in FEATURES}
    if feed == "fit":
        model, mse, speed = run_fit(stream, targets, features, method, budget, dim,
                                    batch, seed)
        result = _result(method, budget, seed, mse, speed, features, feed)
        result["cpu_examples_per_s"] = model.cpu_examples_per_s
        return result
    model = build_model(features, dim)
    squared, seen = 0.0, 0
    # examples/s after the first batches (which compile the step functions)
    timed_from, start = 5, None
    for step, lo in enumerate(range(0, n - batch + 1, batch)):
        if step == timed_from:
            start, timed = time.perf_counter(), seen
        keys = {f: stream[f][lo:lo + batch] for f in FEATURES}
        y = targets[lo:lo + batch, None]
        x = {f: features[f].lookup(keys[f]) for f in FEATURES}
        prediction = model.predict_on_batch(x)
        squared += float(np.sum((np.asarray(prediction) - y) ** 2))
        seen += batch
        x = {f: features[f].update(keys[f], model.optimizer) for f in FEATURES}
        model.train_on_batch(x, y)
    seconds = time.perf_counter() - start
    return _result(method, budget, seed, squared / seen, (seen - timed) / seconds,
                   features, feed)


def _result(method, budget, seed, mse, speed, features, feed):
    result = {"method": method, "budget": budget, "seed": seed, "feed": feed,
              "mse": mse, "examples_per_s": speed,
              "bytes": max(f.bytes for f in features.values())}
    if method.startswith("dynamic"):
        result["fallback"] = features["item"].layer.plan.fallback
        result["fallback_tables"] = list(features["item"].layer.plan.fallback_tables)
        result["fallback_dim"] = features["item"].layer.plan.fallback_dim
        plan = features["item"].layer.plan
        result["fallback_share"] = round(plan.fallback_buckets * plan.fallback_dim * FLOAT
                                         * (1 + ADAM_SLOTS) / budget, 4)
        result["live_ids"] = {f: getattr(features[f], "live_ids", None) for f in FEATURES}
        result["max_measured_bytes"] = max(f.max_measured for f in features.values())
        result["admitted"] = {f: features[f].layer.id_map.size for f in FEATURES}
        result["tier_rows"] = list(features["item"].layer.plan.tier_rows)
        result["decay"] = features["item"].layer.id_map.decay
    return result


def summarize(path):
    """Markdown tables (mean and spread over seeds) from `--json` lines."""
    rows = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    for stream in sorted({r["stream"] for r in rows}):
        print(f"\n{stream}: progressive MSE, mean +- std over seeds (n); examples/s "
              "(x static)\n")
        print("| budget / feature | method | MSE | seeds | examples/s | vs static | "
              "max bytes |")
        print("|---|---|---|---|---|---|---|")
        for budget in sorted({r["budget"] for r in rows if r["stream"] == stream}):
            cell = [r for r in rows if r["stream"] == stream and r["budget"] == budget]
            static = np.mean([r["examples_per_s"] for r in cell if r["method"] == "static"])
            for method in METHODS:
                runs = [r for r in cell if r["method"] == method]
                if not runs:
                    continue
                mse = np.array([r["mse"] for r in runs])
                speed = np.mean([r["examples_per_s"] for r in runs])
                peak = max(r.get("max_measured_bytes", r["bytes"]) for r in runs)
                print(f"| {budget} | {method} | {mse.mean():.4f} +- {mse.std():.4f} | "
                      f"{len(runs)} | {speed:,.0f} | {speed / static:.2f} | {peak} |")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--summarize":
        summarize(sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", nargs="+", default=["movielens", "synthetic"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--budgets", nargs="+", type=int, default=[16384, 65536])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--batch", type=int, default=None,
                        help="examples per batch (default 256; 4096 with --full)")
    parser.add_argument("--days", type=int, default=20)
    parser.add_argument("--per-day", type=int, default=10_000)
    parser.add_argument("--active", type=int, default=20_000)
    parser.add_argument("--churn", type=float, default=0.1)
    parser.add_argument("--full", action="store_true",
                        help="the issue's size: about 100M distinct ids in all "
                             "(50 days of 2M examples, 1M live ids per feature, 99%% "
                             "replaced each day), batch 4096; about 2 GiB of stream")
    parser.add_argument("--feed", choices=["fit", "loop"], default="fit",
                        help="fit: one model.fit over the stream (dynamic_batches, "
                             "row writes in the train step); loop: predict_on_batch, "
                             "then update and train_on_batch, per batch")
    parser.add_argument("--json", help="append one JSON line per run here")
    parser.add_argument("--fallback", choices=["hashing", "qr"], default="qr",
                        help="the dynamic layers' fallback (default: the layer's)")
    parser.add_argument("--fallback-share", type=float, default=None,
                        help="the dynamic layers' fallback share of the budget")
    parser.add_argument("--live-ids", default=None,
                        help="the dynamic layers' live_ids (an integer, or 'warmup': "
                             "the distinct ids of the first 10%% of the stream, what "
                             "the static vocabulary is built from)")
    parser.add_argument("--fallback-dim", type=int, default=None,
                        help="the dynamic layers' fallback width")
    parser.add_argument("--jit-compile", action="store_true",
                        help="compile every model's train step with XLA (Keras's "
                             "default on a CPU-only TensorFlow is not to)")
    parser.add_argument("--decay", type=float, default=None,
                        help="the dynamic layers' count decay per step (default "
                             "0.999 ** (batch / 256): the same half-life in examples "
                             "at every batch size)")
    parser.add_argument("--tier-dims", type=int, nargs="+", default=None,
                        help="dynamic_md's tier widths (default: the layer's)")
    args = parser.parse_args()
    if args.jit_compile:
        global JIT_COMPILE
        JIT_COMPILE = True
    if args.full:
        args.days, args.per_day, args.active, args.churn = 50, 2_000_000, 1_000_000, 0.99
    if args.batch is None:
        # a production stream's batch: at 256 the 100M examples take hours here
        args.batch = 4096 if args.full else 256
    for stream_name in args.streams:
        for seed in args.seeds:
            if stream_name == "movielens":
                stream, targets = movielens_stream()
                info = {f: int(np.unique(stream[f]).size) for f in FEATURES}
            else:
                stream, targets, info = synthetic_stream(
                    args.days, args.per_day, args.active, args.churn, seed)
            print(f"# {stream_name} seed {seed}: {targets.size} examples, distinct "
                  f"ids {info}", flush=True)
            for budget in args.budgets:
                for method in args.methods:
                    options = {"fallback": args.fallback,
                               "fallback_share": args.fallback_share,
                               "fallback_dim": args.fallback_dim,
                               "tier_dims": args.tier_dims,
                               "decay": args.decay, "batch": args.batch,
                               "live_ids": args.live_ids if args.live_ids in (None, "warmup")
                               else int(args.live_ids)}
                    result = run(stream, targets, method, budget, args.dim, args.batch,
                                 seed, feed=args.feed, dynamic_options=options)
                    result["stream"] = stream_name
                    print(json.dumps(result), flush=True)
                    if args.json:
                        with open(args.json, "a", encoding="utf-8") as file:
                            file.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
