"""Dense layers that keep a K-bit copy of their input for the backward pass.

Backprop with approximate activations (Chakrabarti and Moseley,
arXiv:1901.07988): the forward pass is exact, but the activation a layer
keeps for its weight gradient is stored with K bits per value (K = 8, or 4
packed two per byte) instead of 32. The ReLU derivative mask is stored
exactly, one bit per output value, so the gradient with respect to the
layer's input is the exact one; only the kernel gradient sees the
quantized input.

The backward pass keeps only the codes, the bit mask, the kernel and the
range, on every backend (`keras_mixed_dim.backend.residual_gradient`: on
PyTorch `keras.ops.custom_gradient` would save every full-precision input).
"""

import keras
import numpy as np
from keras import ops

from keras_mixed_dim.backend import residual_gradient
from keras_mixed_dim.checks import check_positive_int

_MASKED_ACTIVATIONS = ("relu", "leaky_relu")


def _activation_name(activation):
    """The name under which an activation is handled with a bit mask, or None."""
    if activation is None:
        return "linear"
    if isinstance(activation, str):
        return activation
    name = getattr(activation, "__name__", None)
    if name in ("relu", "leaky_relu", "linear") and activation is keras.activations.get(name):
        return name
    return None


def _pack_bits(mask):
    """`(n, c)` booleans -> `(n, ceil(c / 8))` uint8, eight flags a byte."""
    channels = mask.shape[-1]
    padded = -channels % 8
    bits = ops.cast(mask, "int32")
    if padded:
        bits = ops.pad(bits, [[0, 0], [0, padded]])
    bits = ops.reshape(bits, (-1, (channels + padded) // 8, 8))
    weights = ops.convert_to_tensor(np.array([1 << i for i in range(8)], dtype="int32"))
    return ops.cast(ops.sum(bits * weights, axis=-1), "uint8")


def _unpack_bits(packed, channels):
    weights = ops.convert_to_tensor(np.array([1 << i for i in range(8)], dtype="int32"))
    bits = ops.mod(ops.floor_divide(ops.expand_dims(ops.cast(packed, "int32"), -1), weights), 2)
    bits = ops.reshape(bits, (-1, packed.shape[-1] * 8))
    return bits[:, :channels]


def quantization_grid(lo, hi, bits):
    """Per-channel `(step, zero_point)` of a `bits`-bit grid covering
    `[lo, hi]` (with `lo <= 0 <= hi`) on which 0 is a grid point."""
    levels = float(2**bits - 1)
    step = (hi - lo) / levels
    step = ops.where(step > 0, step, ops.ones_like(step))
    zero_point = ops.clip(ops.round(-lo / step), 0.0, levels)
    return step, zero_point


def quantize(x, lo, hi, bits):
    """`(n, c)` floats -> uint8 codes, `(n, c)` for 8 bits, `(n, ceil(c/2))`
    for 4 bits (two codes a byte, low nibble first)."""
    step, zero_point = quantization_grid(lo, hi, bits)
    levels = float(2**bits - 1)
    codes = ops.clip(ops.round(ops.cast(x, "float32") / step) + zero_point, 0.0, levels)
    codes = ops.cast(codes, "int32")
    if bits == 4:
        channels = x.shape[-1]
        if channels % 2:
            codes = ops.pad(codes, [[0, 0], [0, 1]])
        codes = ops.reshape(codes, (-1, (channels + channels % 2) // 2, 2))
        codes = codes[:, :, 0] + 16 * codes[:, :, 1]
    return ops.cast(codes, "uint8")


def dequantize(codes, lo, hi, bits, channels, dtype="float32"):
    """Inverse of `quantize` (up to the rounding error of the grid)."""
    step, zero_point = quantization_grid(lo, hi, bits)
    codes = ops.cast(codes, "int32")
    if bits == 4:
        codes = ops.stack([ops.mod(codes, 16), ops.floor_divide(codes, 16)], axis=-1)
        codes = ops.reshape(codes, (-1, codes.shape[1] * 2))[:, :channels]
    values = (ops.cast(codes, "float32") - zero_point) * step
    return ops.cast(values, dtype)


def _forward(x, kernel, bias, lo, hi, bits, activation, negative_slope):
    """The exact output and what the backward pass keeps (no full-size float)."""
    z = ops.matmul(x, kernel)
    if bias is not None:
        z = z + bias
    codes = quantize(x, lo, hi, bits)
    if activation == "linear":
        return z, (codes, None)
    positive = z > 0
    if activation == "relu":
        y = ops.relu(z)
    else:
        y = ops.where(positive, z, z * ops.cast(negative_slope, z.dtype))
    return y, (codes, _pack_bits(positive))


def _backward(upstream, saved, kernel, lo, hi, bits, activation, negative_slope,
              in_channels, has_bias):
    codes, mask = saved
    if mask is None:
        dz = upstream
    else:
        flags = ops.cast(_unpack_bits(mask, kernel.shape[-1]), upstream.dtype)
        if activation == "relu":
            dz = upstream * flags
        else:
            slope = ops.cast(negative_slope, upstream.dtype)
            dz = upstream * (flags + (1.0 - flags) * slope)
    dx = ops.matmul(dz, ops.transpose(kernel))
    x_approx = dequantize(codes, lo, hi, bits, in_channels, dtype=dz.dtype)
    dkernel = ops.cast(ops.matmul(ops.transpose(x_approx), dz), kernel.dtype)
    dbias = ops.sum(dz, axis=0) if has_bias else None
    return dx, dkernel, dbias


@keras.saving.register_keras_serializable(package="keras_mixed_dim")
class ApproxActivationDense(keras.layers.Layer):
    """A `Dense` layer that keeps only a `bits`-bit copy of its input for backprop.

    The output is exactly `activation(inputs @ kernel + bias)`. In training
    (`training=True`, as in `model.fit`) the layer does not keep its float
    input for the backward pass: it keeps the input quantized per channel to
    `bits` bits (8, or 4 with two codes a byte) and, for `"relu"` and
    `"leaky_relu"`, the sign of the pre-activation as one bit per output.
    So the gradient with respect to the input is exact, and the kernel
    gradient is computed from the quantized input (Chakrabarti and Moseley,
    "Backprop with Approximate Activations", arXiv:1901.07988).

    The grid of each input channel covers `[lo, hi]`, a running range kept
    in the non-trainable weights `input_min` / `input_max`: each training
    step moves them towards the batch's range by `1 - range_momentum` and
    widens them to contain the batch, so no value of the step is clipped.
    0 is always a grid point, so inputs coming from a ReLU keep their exact
    zeros and spend all codes on `[0, hi]`.

    Activations other than `"relu"`, `"leaky_relu"` and `None`/`"linear"`
    are applied after the approximated matmul with ordinary autodiff (which
    keeps what that activation needs, usually its float output).

    Args:
        units: Positive integer, dimensionality of the output space.
        bits: 8 or 4, bits per value of the stored input.
        activation: Activation function (default `"relu"`). `None` means
            linear.
        use_bias: Whether the layer uses a bias vector.
        kernel_initializer, bias_initializer, kernel_regularizer,
        bias_regularizer, activity_regularizer, kernel_constraint,
        bias_constraint: As in `keras.layers.Dense`.
        range_momentum: Momentum in `[0, 1)` of the running input range.
        negative_slope: Slope for `x < 0` of `"leaky_relu"` (Keras' default
            0.2).
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: A tensor `(..., input_dim)`.
        training: Python boolean; the approximation (and the running range
            update) is used only in training mode. Otherwise the layer is a
            plain `Dense`.

    Returns:
        A tensor `(..., units)`.

    Backends: TensorFlow and JAX use `keras.ops.custom_gradient`; PyTorch a
    `torch.autograd.Function` saving the same compressed tensors.

    Example:

    >>> model = keras.Sequential([keras.Input((64,)),
    ...                           ApproxActivationDense(128, bits=8),
    ...                           keras.layers.Dense(1)])
    >>> model.compile(optimizer="adam", loss="mse")
    >>> model(np.ones((2, 64), "float32")).shape
    (2, 1)
    """

    def __init__(self, units, bits=8, activation="relu", use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None,
                 bias_constraint=None, range_momentum=0.99, negative_slope=0.2,
                 **kwargs):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        units = check_positive_int("units", units)
        if bits not in (4, 8) or isinstance(bits, bool):
            raise ValueError(f"`bits` must be 8 or 4. Received: {bits!r}")
        if not 0.0 <= range_momentum < 1.0:
            raise ValueError(
                f"`range_momentum` must be in [0, 1). Received: {range_momentum!r}"
            )
        self.units = int(units)
        self.bits = int(bits)
        self.activation = keras.activations.get(activation)
        self._activation_kind = _activation_name(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.range_momentum = float(range_momentum)
        self.negative_slope = float(negative_slope)
        self.input_spec = keras.layers.InputSpec(min_ndim=2)
        self.supports_masking = True

    def build(self, input_shape):
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(
                "The last dimension of the inputs to `ApproxActivationDense` "
                f"must be known. Received input shape: {input_shape}"
            )
        self.kernel = self.add_weight(
            name="kernel", shape=(input_dim, self.units),
            initializer=self.kernel_initializer, regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(self.units,), initializer=self.bias_initializer,
                regularizer=self.bias_regularizer, constraint=self.bias_constraint,
            )
        else:
            self.bias = None
        # float32 under any policy: the grid must not be coarser than the codes
        self.input_min = self.add_weight(
            name="input_min", shape=(input_dim,), initializer="zeros",
            trainable=False, dtype="float32", autocast=False,
        )
        self.input_max = self.add_weight(
            name="input_max", shape=(input_dim,), initializer="zeros",
            trainable=False, dtype="float32", autocast=False,
        )
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: input_dim})

    def call(self, inputs, training=None):
        if not training:
            outputs = ops.matmul(inputs, self.kernel)
            if self.use_bias:
                outputs = outputs + self.bias
            return self.activation(outputs)
        input_dim = self.kernel.shape[0]
        flat = inputs if len(inputs.shape) == 2 else ops.reshape(inputs, (-1, input_dim))
        lo, hi = self._update_range(flat)
        kind = self._activation_kind
        fused = kind if kind in ("linear", *_MASKED_ACTIVATIONS) else "linear"
        kernel = ops.convert_to_tensor(self.kernel)
        bias = ops.convert_to_tensor(self.bias) if self.use_bias else None
        outputs = _approx_dense(flat, kernel, bias, lo, hi, self.bits, fused,
                                self.negative_slope)
        if len(inputs.shape) != 2:
            outputs = ops.reshape(outputs, (*ops.shape(inputs)[:-1], self.units))
        if fused == "linear" and kind != "linear":
            outputs = self.activation(outputs)
        return outputs

    def _update_range(self, flat):
        values = ops.stop_gradient(ops.cast(flat, "float32"))
        batch_lo = ops.minimum(ops.min(values, axis=0), 0.0)
        batch_hi = ops.maximum(ops.max(values, axis=0), 0.0)
        m = self.range_momentum
        lo = ops.minimum(batch_lo, m * self.input_min + (1.0 - m) * batch_lo)
        hi = ops.maximum(batch_hi, m * self.input_max + (1.0 - m) * batch_hi)
        self.input_min.assign(lo)
        self.input_max.assign(hi)
        return lo, hi

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def saved_bytes_per_row(self):
        """Bytes this layer keeps for the backward pass per input row in
        training (the kernel, which is a weight, not counted)."""
        input_dim = self.kernel.shape[0]
        codes = input_dim if self.bits == 8 else (input_dim + 1) // 2
        mask = (self.units + 7) // 8 if self._activation_kind in _MASKED_ACTIVATIONS else 0
        return codes + mask

    def get_config(self):
        config = super().get_config()
        config.update({
            "units": self.units,
            "bits": self.bits,
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
            "bias_constraint": keras.constraints.serialize(self.bias_constraint),
            "range_momentum": self.range_momentum,
            "negative_slope": self.negative_slope,
        })
        return config


def _approx_dense(x, kernel, bias, lo, hi, bits, activation, negative_slope):
    """`activation(x @ kernel + bias)` on 2-D `x`, keeping K-bit `x` for backprop."""
    in_channels = x.shape[-1]
    has_bias = bias is not None
    if bias is None:
        # a dummy operand keeps one signature for both cases
        bias = ops.zeros((kernel.shape[-1],), dtype=kernel.dtype)

    def forward(x, kernel, bias, lo, hi):
        y, (codes, mask) = _forward(x, kernel, bias if has_bias else None, lo, hi,
                                    bits, activation, negative_slope)
        return y, (codes, mask, kernel, lo, hi)

    def backward(dy, residuals):
        codes, mask, kernel, lo, hi = residuals
        dx, dkernel, dbias = _backward(dy, (codes, mask), kernel, lo, hi, bits,
                                       activation, negative_slope, in_channels, has_bias)
        return dx, dkernel, dbias, None, None

    return residual_gradient(forward, backward, x, kernel, bias, lo, hi)


_DENSE_ARGS = ("units", "activation", "use_bias", "kernel_initializer",
               "bias_initializer", "kernel_regularizer", "bias_regularizer",
               "activity_regularizer", "kernel_constraint", "bias_constraint",
               "name", "trainable", "dtype")


def approximate_activations(model, bits=8, include=None, exclude=(),
                            skip_input_layers=False):
    """Copy of `model` whose `Dense` layers keep `bits`-bit inputs for backprop.

    Every plain `keras.layers.Dense` (not a subclass, not quantized, no LoRA)
    of a functional or Sequential `model` becomes an `ApproxActivationDense`
    with the same configuration and weights; other layers are cloned with
    their weights. The result computes the same outputs.

    Args:
        model: A built functional or Sequential `keras.Model`.
        bits: 8 or 4.
        include: Optional names of the Dense layers to convert (default all).
        exclude: Names of Dense layers to leave as they are.
        skip_input_layers: Leave Dense layers that read a model input as
            they are. The input batch stays in memory for the whole step
            anyway, so its quantized copy only adds error; but such a layer
            then keeps its float output for its own activation's backward
            pass, which usually costs more (default `False`).

    Returns:
        A new model (not compiled).

    Example:

    >>> model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, activation="relu"),
    ...                           keras.layers.Dense(1)])
    >>> small = approximate_activations(model, bits=4)
    >>> type(small.layers[0]).__name__
    'ApproxActivationDense'
    """
    if bits not in (4, 8) or isinstance(bits, bool):
        raise ValueError(f"`bits` must be 8 or 4. Received: {bits!r}")
    if not isinstance(model, keras.Model) or not model.built:
        raise ValueError(
            f"`model` must be a built functional or Sequential keras.Model. Received: {model!r}"
        )
    names = {layer.name for layer in model.layers}
    for name in [*(include or ()), *exclude]:
        if name not in names:
            raise ValueError(f"No layer named {name!r} in model {model.name!r}.")
    fed_by_inputs = _layers_reading_inputs(model) if skip_input_layers else set()
    converted = {}

    def clone(layer):
        if not isinstance(layer, keras.layers.Layer):
            return layer  # a stateless operation, such as a slice
        eligible = (
            layer.name not in fed_by_inputs
            and type(layer) is keras.layers.Dense
            and getattr(layer, "lora_rank", None) in (None, 0)
            and getattr(layer, "quantization_mode", None) is None
            and (include is None or layer.name in include)
            and layer.name not in exclude
        )
        if not eligible:
            new = layer.__class__.from_config(layer.get_config())
            converted[layer.name] = (layer, new, False)
            return new
        config = layer.get_config()
        kwargs = {key: config[key] for key in _DENSE_ARGS if key in config}
        new = ApproxActivationDense(bits=bits, **kwargs)
        converted[layer.name] = (layer, new, True)
        return new

    result = keras.models.clone_model(model, clone_function=clone)
    for old, new, is_dense in converted.values():
        if not old.weights:
            continue
        if is_dense:
            new.kernel.assign(old.kernel)
            if old.use_bias:
                new.bias.assign(old.bias)
        else:
            new.set_weights(old.get_weights())
    return result


def _layers_reading_inputs(model):
    """Names of the layers of `model` called directly on a model input."""
    inputs = {id(t) for t in model.inputs}
    names = set()
    for layer in model.layers:
        for node in getattr(layer, "_inbound_nodes", []):
            if any(id(t) in inputs for t in node.input_tensors):
                names.add(layer.name)
    return names
