"""Distortion of oblivious subspace sketches against sketch rows, and the
warm-start error of sketched PCA against the exact optimum.

    python benchmarks/bench_sketch.py [--rows 200000] [--width 32] [--seeds 3]

Incoherent data: Gaussian rows with a decaying column spectrum. Coherent
data: the same plus `width` spike rows carrying most of the energy, which is
what a few ids looked up far more often than the rest look like once each row
is weighted by its count (a row repeated `c` times has the Gram matrix of one
row scaled by `sqrt(c)`).

Distortion is `max |sigma_i(S U)^2 - 1|`, `U` an orthonormal basis of the
columns. The PCA table prints, for blocks cut to rank `width / 4`, the
Frobenius error of sketched principal directions over the exact optimum,
before the gate of `keras_mixed_dim.sketch.low_rank` (which falls back to
exact directions above 1.05x).
"""

import argparse
import os
import time

# On a shared 2-core machine multithreaded OpenBLAS spins against the other
# load and runs ~15x slower than one thread; override to measure otherwise.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from keras_mixed_dim.sketch import KINDS  # noqa: E402
from keras_mixed_dim.sketch import default_sketch_rows  # noqa: E402
from keras_mixed_dim.sketch import distortion  # noqa: E402
from keras_mixed_dim.sketch import low_rank  # noqa: E402
from keras_mixed_dim.sketch import subspace_embedding  # noqa: E402


def incoherent(rows, width, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((rows, width)) * np.geomspace(1.0, 0.05, width)


def coherent(rows, width, seed):
    data = incoherent(rows, width, seed)
    # spikes far heavier than all other rows together: leverage close to 1
    weight = 30.0 * np.sqrt(rows)
    rng = np.random.default_rng(seed + 1000)
    spikes = np.linalg.qr(rng.standard_normal((width, width)))[0] * weight
    data[:width] = spikes
    return data


def embedding_like(rows, width, seed):
    """Rows of a trained table: a few strong directions and noise, and
    per-row norms that fall with the id's rank (popular ids are longer)."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((width, width)))[0]
    spectrum = np.geomspace(1.0, 0.02, width)
    norms = (1.0 + np.arange(rows)) ** -0.25
    return ((rng.standard_normal((rows, width)) * spectrum) @ basis.T) * norms[:, None]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--factors", default="2,4,8,16,32",
                        help="sketch rows as multiples of the width")
    args = parser.parse_args()
    d = args.width
    factors = [int(f) for f in args.factors.split(",")]
    print(f"rows={args.rows:,} width={d} seeds={args.seeds}; "
          "distortion max over seeds (median in brackets)")
    for data_name, make in (("incoherent", incoherent), ("coherent", coherent)):
        print(f"\n{data_name}")
        print(f"{'sketch':>12} " + " ".join(f"{f'{f}d':>14}" for f in factors))
        for kind in KINDS:
            cells = []
            for factor in factors:
                values = []
                for seed in range(args.seeds):
                    a = make(args.rows, d, seed)
                    b = subspace_embedding(a, factor * d, kind=kind, seed=seed + 7)
                    values.append(distortion(a, b))
                cells.append(f"{max(values):6.3f} ({np.median(values):5.3f})")
            print(f"{kind:>12} " + " ".join(f"{c:>14}" for c in cells))

    k = max(1, d // 4)
    print(f"\nsketched PCA, rank {k} of {d}: error / exact optimum, max over seeds")
    for data_name, make in (("incoherent", incoherent), ("coherent", coherent),
                            ("embedding-like", embedding_like)):
        print(f"{data_name}")
        print(f"{'sketch':>12} " + " ".join(f"{f'{f}d':>8}" for f in factors)
              + f" {'default':>8} {'seconds':>8}")
        for kind in KINDS:
            cells = []
            for factor in factors + [None]:
                ratios, seconds = [], 0.0
                for seed in range(args.seeds):
                    a = make(args.rows, d, seed)
                    rows = None if factor is None else factor * d
                    started = time.perf_counter()
                    result = low_rank(a, k, sketch=kind, sketch_rows=rows,
                                      seed=seed + 7, max_error_ratio=None)
                    seconds += time.perf_counter() - started
                    ratios.append(result.error_ratio)
                cells.append(f"{max(ratios):8.4f}")
            print(f"{kind:>12} " + " ".join(cells)
                  + f" {seconds / args.seeds:8.2f}")
        print("  default rows: " + ", ".join(
            f"{kind} {default_sketch_rows(kind, d)}" for kind in KINDS))
        # what re-planning and conversion use: OSNAP, default rows, gated
        ratios, fallbacks = [], 0
        for seed in range(args.seeds):
            result = low_rank(make(args.rows, d, seed), k, sketch="osnap", seed=seed + 7)
            ratios.append(result.error_ratio)
            fallbacks += result.fell_back
        print(f"  warm start (osnap, default rows, gated at 1.05x): max "
              f"{max(ratios):.4f} x the exact PCA optimum, {fallbacks} of "
              f"{args.seeds} fell back to exact directions")


if __name__ == "__main__":
    main()
