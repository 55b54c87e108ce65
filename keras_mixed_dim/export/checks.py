"""Checks an export runs before writing anything (no TensorFlow needed)."""


def embedding_input_dims(model, names):
    """`input_dim` of the named embedding layers of `model`, in order.

    Raises:
        ValueError: A named layer is missing or has no `input_dim`.
    """
    dims = []
    for name in names:
        try:
            layer = model.get_layer(name)
        except ValueError:
            raise ValueError(
                f"The model has no layer {name!r}; it was not built by the "
                "function this preprocessing belongs to.") from None
        if not hasattr(layer, "input_dim"):
            raise ValueError(f"Layer {name!r} is not an embedding layer.")
        dims.append(int(layer.input_dim))
    return dims
