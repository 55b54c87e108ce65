"""Checks an export runs before writing anything (no TensorFlow needed)."""


def embedding_input_dims(model, names):
    """`input_dim` of the named embedding layers of `model`, in order.

    A name may also be a feature of a `StackedEmbedding` of the model (its
    `feature_names`: a stacked DLRM's features keep the per-feature layers'
    names `embedding_<f>`); its vocabulary size is then that feature's.

    Raises:
        ValueError: A named layer (or stacked feature) is missing or has no
            `input_dim`.
    """
    stacked = {}
    for layer in model._flatten_layers(include_self=False):
        if hasattr(layer, "input_dims") and hasattr(layer, "feature_names"):
            for feature, name in enumerate(layer.feature_names):
                stacked.setdefault(name, int(layer.input_dims[feature]))
    dims = []
    for name in names:
        try:
            layer = model.get_layer(name)
        except ValueError:
            if name in stacked:
                dims.append(stacked[name])
                continue
            raise ValueError(
                f"The model has no layer {name!r}; it was not built by the "
                "function this preprocessing belongs to.") from None
        if not hasattr(layer, "input_dim"):
            raise ValueError(f"Layer {name!r} is not an embedding layer.")
        dims.append(int(layer.input_dim))
    return dims
