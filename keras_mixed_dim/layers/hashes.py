"""Seeded 32-bit hashes, identical bit for bit on TensorFlow, JAX and PyTorch.

The hashed layers (`HashingEmbedding`, `HashedMemoryEmbedding`) place ids in
memory with these hashes, so a model trained on one backend must find the
same slots on another, and a host-side numpy computation (the LMA
signatures, the tests) must agree with the graph. Three obstacles:

- JAX without `jax_enable_x64` has no 64-bit integers, so products of two
  32-bit numbers cannot be formed directly.
- PyTorch has no general `uint32` arithmetic.
- Overflow of signed 32-bit multiplication is not something to rely on.

So every 32-bit value lives in two int32 "lanes" `(hi, lo)` of 16 bits each,
and multiplication by a 32-bit constant is done byte by byte, so no
intermediate exceeds 2**27. Only `+`, `*`, `&`, `^` and `>>` on non-negative
int32 values are used: exact on every backend.

The hash of a tuple of non-negative int32 values `(x_0, ..., x_{k-1})` with a
32-bit `salt` is

    s = 0
    for t in range(k): s = mix(s ^ x_t, A_t)
    h = mix(s ^ salt, B)

where `mix(s, (m_1, m_2, m_3))` is three rounds of `s = s * m (mod 2**32);
s ^= s >> 16` with odd multipliers drawn from the seed (a multiply-shift
family in the style of Dietzfelbinger et al., each round folding the high
half, which the multiplication fills from all bits, back into the low half).
A bucket in `[0, num_buckets)` is `h mod num_buckets`; a sign is the top bit
of `h`. `hash_tuple_numpy` is the same function written with plain uint64
numpy arithmetic; the tests check the lane version against it.
"""

import numpy as np
from keras import ops

MASK32 = 0xFFFFFFFF
MAX_BUCKETS = 1 << 30
ROUNDS = 3


class HashParams:
    """The odd multipliers of one seeded hash of tuples of `arity` values.

    Args:
        seed: Integer seed; equal seeds give equal hashes.
        arity: Number of values hashed together (1 for a plain id).

    Attributes:
        tuple_multipliers: uint32 array `(arity, ROUNDS)`.
        final_multipliers: uint32 array `(ROUNDS,)`.
    """

    def __init__(self, seed, arity=1):
        if int(arity) < 1:
            raise ValueError(f"`arity` must be >= 1. Received: {arity!r}")
        rng = np.random.default_rng([int(seed) & MASK32, 0x5EED])
        draws = rng.integers(0, 1 << 32, size=(int(arity) + 1, ROUNDS),
                             dtype=np.uint64)
        odd = (draws | np.uint64(1)).astype(np.uint32)
        self.seed = int(seed)
        self.arity = int(arity)
        self.tuple_multipliers = odd[:-1]
        self.final_multipliers = odd[-1]
        # Python-int bytes of every multiplier, prepared once: the graph
        # code then holds no numpy unsigned values (torch.compile cannot
        # guard on uint64 arrays).
        self.tuple_bytes = [[_bytes_of(m) for m in row] for row in self.tuple_multipliers]
        self.final_bytes = [_bytes_of(m) for m in self.final_multipliers]

    @property
    def num_constants(self):
        """How many 32-bit constants the hash stores (for byte counts)."""
        return (self.arity + 1) * ROUNDS


def _bytes_of(multiplier):
    value = int(multiplier)
    return tuple((value >> (8 * i)) & 0xFF for i in range(4))


def lane_constant(value):
    """A uint32 constant (scalar or array) as Python-int hi / lo lists,
    ready for `hash_tuple(..., salt=...)` inside compiled functions."""
    value = np.asarray(value, dtype=np.uint64)
    return LaneConstant((value >> np.uint64(16)).astype(np.int64).tolist(),
                        (value & np.uint64(0xFFFF)).astype(np.int64).tolist())


class LaneConstant:
    """`hi` and `lo` of a uint32 constant as nested Python ints (a plain
    object: Keras attribute tracking would rebuild a tuple subclass)."""

    def __init__(self, hi, lo):
        self.hi = hi
        self.lo = lo


def random_salts(seed, count):
    """`count` distinct-in-practice uint32 salts drawn from `seed`."""
    rng = np.random.default_rng([int(seed) & MASK32, 0x5A17])
    return rng.integers(0, 1 << 32, size=(int(count),), dtype=np.uint64).astype(
        np.uint32)


def check_num_buckets(num_buckets, name="num_buckets"):
    if isinstance(num_buckets, bool) or not isinstance(
        num_buckets, (int, np.integer)
    ) or not 1 <= num_buckets <= MAX_BUCKETS:
        raise ValueError(
            f"`{name}` must be an integer in [1, 2**30]. Received: {num_buckets!r}"
        )
    return int(num_buckets)


# ---------------------------------------------------------------- numpy reference


def _mix_numpy(s, multipliers):
    for m in np.asarray(multipliers, dtype=np.uint64).reshape(-1, ROUNDS).T:
        s = (s * m) & MASK32
        s ^= s >> np.uint64(16)
    return s


def hash_tuple_numpy(values, params, salt=0):
    """Reference 32-bit hash (numpy, uint64 arithmetic).

    Args:
        values: Integer array `(..., arity)` of values in `[0, 2**31)`
            (for single ids pass `ids[..., None]`).
        params: `HashParams`.
        salt: uint32 scalar or array broadcastable to `values.shape[:-1]`.

    Returns:
        uint64 array `values.shape[:-1]` of 32-bit hashes.
    """
    values = np.asarray(values).astype(np.uint64)
    if values.shape[-1] != params.arity:
        raise ValueError(
            f"Expected a last axis of {params.arity} values; got {values.shape}.")
    s = np.zeros(values.shape[:-1], dtype=np.uint64)
    for t in range(params.arity):
        s = _mix_numpy(s ^ values[..., t], params.tuple_multipliers[t])
    s = s ^ np.asarray(salt, dtype=np.uint64)
    return _mix_numpy(s, params.final_multipliers)


def buckets_numpy(values, params, num_buckets, salt=0):
    """Bucket in `[0, num_buckets)` (int64) of `hash_tuple_numpy`, computed
    column by column in uint32 (what the host maps of `DynamicEmbedding`
    call on every batch)."""
    values = np.asarray(values)
    if values.shape[-1] != params.arity:
        raise ValueError(
            f"Expected a last axis of {params.arity} values; got {values.shape}.")
    columns = [values[..., t] for t in range(params.arity)]
    return buckets_of_columns(columns, params, num_buckets, salt)


def buckets_of_columns(columns, params, num_buckets, salt=0):
    """`buckets_numpy` of the tuples `(columns[0][i], columns[1][i], ...)`
    (integer arrays of one shape), without stacking them.

    uint32 arithmetic wraps modulo 2**32, so each round is one multiply, one
    shift and one xor in place, where the uint64 reference also masks; only
    the low 32 bits of a value reach the hash in both (the first operation
    after each xor is a product modulo 2**32).
    """
    if len(columns) != params.arity:
        raise ValueError(f"Expected {params.arity} columns; got {len(columns)}.")
    rounds = getattr(params, "_uint32_rounds", None)
    if rounds is None:
        # numpy scalars made once: iterating the arrays makes new ones per call
        rounds = params._uint32_rounds = (
            [list(row) for row in params.tuple_multipliers], list(params.final_multipliers))
    s = np.asarray(columns[0]).astype(np.uint32)  # a copy: hashed in place
    shifted = np.empty_like(s)
    for t in range(params.arity):
        if t:
            np.bitwise_xor(s, np.asarray(columns[t]).astype(np.uint32, copy=False), out=s)
        for m in rounds[0][t]:
            np.multiply(s, m, out=s)
            np.right_shift(s, 16, out=shifted)
            np.bitwise_xor(s, shifted, out=s)
    salt = np.asarray(salt).astype(np.uint32)
    if salt.ndim or int(salt):
        s = s ^ salt
        shifted = np.empty_like(s)
    for m in rounds[1]:
        np.multiply(s, m, out=s)
        np.right_shift(s, 16, out=shifted)
        np.bitwise_xor(s, shifted, out=s)
    return (s % np.uint32(num_buckets)).astype(np.int64)


def signs_numpy(values, params, salt=0):
    """Reference sign in {-1, +1} from the top bit of the hash (float32)."""
    top = hash_tuple_numpy(values, params, salt) >> np.uint64(31)
    return (1.0 - 2.0 * top.astype(np.float32)).astype(np.float32)


# ------------------------------------------------------------ keras.ops (lanes)


def _int32_constant(value):
    return ops.convert_to_tensor(value, dtype="int32")


def to_lanes(x):
    """Non-negative int32 tensor -> `(hi, lo)` lanes."""
    x = ops.cast(x, "int32")
    return ops.right_shift(x, 16), ops.bitwise_and(x, 0xFFFF)


def _xor_constant(lanes, value):
    if not isinstance(value, LaneConstant):
        value = lane_constant(value)
    hi_c, lo_c = _int32_constant(value.hi), _int32_constant(value.lo)
    hi, lo = lanes
    return ops.bitwise_xor(hi, hi_c), ops.bitwise_xor(lo, lo_c)


def _mul_constant(lanes, multiplier_bytes):
    """`x * multiplier mod 2**32` in lanes; the multiplier given as its four
    bytes (Python ints, least significant first).

    With `a = a0 + a1 2^8 + a2 2^16 + a3 2^24` (bytes) and `x = xl + xh 2^16`
    the product mod 2^32 is `a0 xl + a1 xl 2^8 + (a2 xl + a0 xh) 2^16 +
    (a3 xl + a1 xh) 2^24`: every partial product is below 2^24.
    """
    a0, a1, a2, a3 = multiplier_bytes
    hi, lo = lanes
    t0 = lo * a0
    t1 = lo * a1
    t2 = lo * a2 + hi * a0
    t3 = lo * a3 + hi * a1
    low = ops.bitwise_and(t0, 0xFFFF) + ops.left_shift(ops.bitwise_and(t1, 0xFF), 8)
    high = (ops.right_shift(t0, 16) + ops.right_shift(t1, 8) + t2
            + ops.left_shift(ops.bitwise_and(t3, 0xFF), 8))
    high = ops.bitwise_and(high + ops.right_shift(low, 16), 0xFFFF)
    return high, ops.bitwise_and(low, 0xFFFF)


def _mix(lanes, multiplier_bytes):
    for m in multiplier_bytes:
        hi, lo = _mul_constant(lanes, m)
        lanes = (hi, ops.bitwise_xor(lo, hi))
    return lanes


def hash_tuple(values, params, salt=0):
    """The 32-bit hash of `hash_tuple_numpy`, in `(hi, lo)` lanes.

    Args:
        values: A list of `params.arity` non-negative int32 tensors (all
            broadcastable to one shape).
        params: `HashParams`.
        salt: uint32 scalar or numpy array broadcastable to the values, or
            its `lane_constant` (prepare it once for compiled code).

    Returns:
        `(hi, lo)` int32 tensors, each in `[0, 2**16)`.
    """
    if len(values) != params.arity:
        raise ValueError(f"Expected {params.arity} values; got {len(values)}.")
    lanes = None
    for t, value in enumerate(values):
        x = to_lanes(value)
        if lanes is not None:
            x = (ops.bitwise_xor(lanes[0], x[0]), ops.bitwise_xor(lanes[1], x[1]))
        lanes = _mix(x, params.tuple_bytes[t])
    lanes = _xor_constant(lanes, salt)
    return _mix(lanes, params.final_bytes)


def lanes_mod(lanes, num_buckets):
    """`(hi * 2**16 + lo) mod num_buckets` without leaving int32.

    Shifts the remainder of `hi` left by as many bits at a time as keep it
    below 2**31, reducing after each shift.
    """
    num_buckets = check_num_buckets(num_buckets)
    hi, lo = lanes
    r = ops.mod(hi, num_buckets)
    step = 31 - (num_buckets - 1).bit_length()
    remaining = 16
    while remaining:
        shift = min(step, remaining)
        r = ops.mod(ops.left_shift(r, shift), num_buckets)
        remaining -= shift
    return ops.mod(r + lo, num_buckets)


def lanes_sign(lanes, dtype="float32"):
    """-1 or +1 from the top bit of the hash."""
    top = ops.right_shift(lanes[0], 15)
    return ops.cast(1 - 2 * top, dtype)


def buckets(values, params, num_buckets, salt=0):
    """int32 bucket in `[0, num_buckets)` of each value tuple (see module doc)."""
    return lanes_mod(hash_tuple(values, params, salt), num_buckets)
