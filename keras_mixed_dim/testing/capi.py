"""Load and run a SavedModel through TensorFlow's C API, the way TF Serving does.

Never imports TensorFlow's Python package: it loads the C library shipped in
the tensorflow wheel with ctypes (`TF_LoadSessionFromSavedModel` with the
`serve` tag, then `TF_SessionRun`), and reads the `serving_default`
SignatureDef's tensor names from the MetaGraphDef bytes with a small
protobuf wire-format reader.

Importing `keras_mixed_dim` imports Keras (and with it TensorFlow's Python
package), so a process that must stay free of TensorFlow loads this file by
path, as `tests/programs/capi_run.py` does.
"""

import ctypes
import importlib.util
import pathlib
import time

import numpy as np

# TF_DataType codes (tensorflow/c/tf_datatype.h).
DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 9: np.int64, 10: np.bool_}
DTYPE_CODES = {np.dtype(v): k for k, v in DTYPES.items()}
TF_STRING = 7
TSTRING_BYTES = 24  # sizeof(TF_TString)


def library_path():
    """The C API library inside the installed tensorflow wheel (not imported)."""
    spec = importlib.util.find_spec("tensorflow")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("The tensorflow wheel is not installed.")
    folder = pathlib.Path(list(spec.submodule_search_locations)[0])
    for name in ("libtensorflow_cc.so.2", "libtensorflow.so.2"):
        if (folder / name).exists():
            return folder / name
    raise FileNotFoundError(f"No TensorFlow C library in {folder}.")


# --- protobuf wire format: just enough to read SignatureDefs ---------------

def _varint(data, pos):
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data):
    """Yields (field number, wire type, value) of one message."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"Unsupported protobuf wire type {wire}.")
        yield number, wire, value


def _map_entries(data_list):
    """Decodes map<string, message> entries (key = 1, value = 2)."""
    result = {}
    for entry in data_list:
        key = value = None
        for number, _, field in _fields(entry):
            if number == 1:
                key = bytes(field).decode()
            elif number == 2:
                value = bytes(field)
        result[key] = value
    return result


def _tensor_info(data):
    info = {"name": None, "dtype": None, "shape": None}
    for number, _, value in _fields(data):
        if number == 1:
            info["name"] = bytes(value).decode()
        elif number == 2:
            info["dtype"] = value
        elif number == 3:
            dims = []
            for n, _, dim in _fields(value):
                if n == 3 and dim:  # TensorShapeProto.unknown_rank
                    dims = None
                    break
                if n == 2:  # TensorShapeProto.dim
                    size = -1
                    for dn, _, dv in _fields(dim):
                        if dn == 1:
                            size = dv - (1 << 64) if dv >= 1 << 63 else dv
                    dims.append(size)
            info["shape"] = dims
    return info


def read_signature(meta_graph_bytes, name="serving_default"):
    """`{"inputs": {key: info}, "outputs": {key: info}}` of one SignatureDef."""
    signatures = _map_entries(
        [bytes(v) for n, _, v in _fields(meta_graph_bytes) if n == 5]
    )
    if name not in signatures:
        raise KeyError(f"No signature {name!r}; the SavedModel has {sorted(signatures)}.")
    inputs, outputs = [], []
    for number, _, value in _fields(signatures[name]):
        if number == 1:
            inputs.append(bytes(value))
        elif number == 2:
            outputs.append(bytes(value))
    return {
        "inputs": {k: _tensor_info(v) for k, v in _map_entries(inputs).items()},
        "outputs": {k: _tensor_info(v) for k, v in _map_entries(outputs).items()},
    }


# --- the C API --------------------------------------------------------------

class _Output(ctypes.Structure):
    _fields_ = [("oper", ctypes.c_void_p), ("index", ctypes.c_int)]


class _Buffer(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("length", ctypes.c_size_t),
                ("data_deallocator", ctypes.c_void_p)]


def _bind(lib):
    v, p, i, s = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_size_t
    signatures = {
        "TF_NewStatus": ([], v), "TF_DeleteStatus": ([v], None),
        "TF_GetCode": ([v], i), "TF_Message": ([v], p),
        "TF_NewGraph": ([], v), "TF_DeleteGraph": ([v], None),
        "TF_NewSessionOptions": ([], v), "TF_DeleteSessionOptions": ([v], None),
        "TF_NewBuffer": ([], ctypes.POINTER(_Buffer)),
        "TF_DeleteBuffer": ([ctypes.POINTER(_Buffer)], None),
        "TF_LoadSessionFromSavedModel": (
            [v, v, p, ctypes.POINTER(p), i, v, ctypes.POINTER(_Buffer), v], v),
        "TF_CloseSession": ([v, v], None), "TF_DeleteSession": ([v, v], None),
        "TF_GraphOperationByName": ([v, p], v),
        "TF_AllocateTensor": ([i, ctypes.POINTER(ctypes.c_int64), i, s], v),
        "TF_DeleteTensor": ([v], None), "TF_TensorData": ([v], v),
        "TF_TensorByteSize": ([v], s), "TF_TensorType": ([v], i),
        "TF_NumDims": ([v], i), "TF_Dim": ([v, i], ctypes.c_int64),
        "TF_StringInit": ([v], None), "TF_StringCopy": ([v, p, s], None),
        "TF_StringDealloc": ([v], None),
        "TF_SessionRun": (
            [v, v, ctypes.POINTER(_Output), ctypes.POINTER(v), i,
             ctypes.POINTER(_Output), ctypes.POINTER(v), i, v, i, v, v], None),
    }
    for name, (args, result) in signatures.items():
        function = getattr(lib, name)
        function.argtypes = args
        function.restype = result
    return lib


DTYPE_NAMES = {1: "float32", 2: "float64", 3: "int32", 7: "string", 9: "int64",
               10: "bool"}


def _check_feed(key, array, info):
    """Rejects a feed the signature does not allow, naming the input: TF
    Serving clients get such errors from the server, and the C API itself
    would run a scalar for a `(batch,)` input and return an empty result."""
    dtype = info.get("dtype")
    if dtype is not None:
        is_string = array.dtype.kind in "SUO"
        if (dtype == TF_STRING) != is_string or (
                not is_string and DTYPE_CODES.get(array.dtype) != dtype):
            raise TypeError(
                f"Input `{key}` must be {DTYPE_NAMES.get(dtype, dtype)}; got "
                f"{array.dtype}.")
    shape = info.get("shape")
    if shape is not None:
        if array.ndim != len(shape) or any(
                d >= 0 and d != n for d, n in zip(shape, array.shape)):
            expected = "(" + ", ".join("?" if d < 0 else str(d) for d in shape) + \
                ("," if len(shape) == 1 else "") + ")"
            raise ValueError(
                f"Input `{key}` must have shape {expected}; got {array.shape}.")


class CApiModel:
    """A SavedModel loaded with `TF_LoadSessionFromSavedModel` (tag `serve`).

    Args:
        export_dir: A SavedModel folder (e.g. `BASE/NAME/VERSION`).
        signature: The SignatureDef to run.
    """

    def __init__(self, export_dir, signature="serving_default"):
        self.lib = _bind(ctypes.CDLL(str(library_path()), mode=ctypes.RTLD_GLOBAL))
        lib = self.lib
        self.status = lib.TF_NewStatus()
        self.graph = lib.TF_NewGraph()
        options = lib.TF_NewSessionOptions()
        meta = lib.TF_NewBuffer()
        tags = (ctypes.c_char_p * 1)(b"serve")
        self.session = lib.TF_LoadSessionFromSavedModel(
            options, None, str(export_dir).encode(), tags, 1, self.graph, meta,
            self.status)
        lib.TF_DeleteSessionOptions(options)
        self._check("TF_LoadSessionFromSavedModel")
        meta_bytes = ctypes.string_at(meta.contents.data, meta.contents.length)
        lib.TF_DeleteBuffer(meta)
        self.signature = read_signature(meta_bytes, signature)

    def _check(self, what):
        if self.lib.TF_GetCode(self.status) != 0:
            message = self.lib.TF_Message(self.status).decode(errors="replace")
            raise RuntimeError(f"{what} failed: {message}")

    def _output(self, tensor_name):
        op_name, _, index = tensor_name.partition(":")
        op = self.lib.TF_GraphOperationByName(self.graph, op_name.encode())
        if not op:
            raise KeyError(f"No operation {op_name!r} in the graph.")
        return _Output(op, int(index or 0))

    def _tensor(self, array):
        lib = self.lib
        dims = (ctypes.c_int64 * array.ndim)(*array.shape)
        if array.dtype.kind in "SUO":
            values = [v if isinstance(v, bytes) else str(v).encode()
                      for v in array.ravel()]
            tensor = lib.TF_AllocateTensor(TF_STRING, dims, array.ndim,
                                           TSTRING_BYTES * len(values))
            base = lib.TF_TensorData(tensor)
            for k, value in enumerate(values):
                slot = base + k * TSTRING_BYTES
                lib.TF_StringInit(slot)
                lib.TF_StringCopy(slot, value, len(value))
            return tensor
        array = np.ascontiguousarray(array)
        if array.dtype not in DTYPE_CODES:
            raise TypeError(f"Unsupported input dtype {array.dtype}.")
        tensor = lib.TF_AllocateTensor(DTYPE_CODES[array.dtype], dims, array.ndim,
                                       array.nbytes)
        if array.nbytes:
            ctypes.memmove(lib.TF_TensorData(tensor), array.ctypes.data, array.nbytes)
        return tensor

    def _to_numpy(self, tensor):
        lib = self.lib
        shape = [lib.TF_Dim(tensor, d) for d in range(lib.TF_NumDims(tensor))]
        dtype = DTYPES[lib.TF_TensorType(tensor)]
        size = lib.TF_TensorByteSize(tensor)
        data = ctypes.string_at(lib.TF_TensorData(tensor), size) if size else b""
        return np.frombuffer(data, dtype=dtype).reshape(shape).copy()

    def run(self, inputs):
        """Runs the signature on `{input key: numpy array}`; returns outputs."""
        spec = self.signature
        missing = set(spec["inputs"]) - set(inputs)
        if missing:
            raise KeyError(f"Missing inputs {sorted(missing)}.")
        keys = sorted(spec["inputs"])
        arrays = {k: np.asarray(inputs[k]) for k in keys}
        for k in keys:
            _check_feed(k, arrays[k], spec["inputs"][k])
        out_keys = sorted(spec["outputs"])
        feeds = (_Output * len(keys))(
            *[self._output(spec["inputs"][k]["name"]) for k in keys])
        tensors = [self._tensor(arrays[k]) for k in keys]
        values = (ctypes.c_void_p * len(keys))(*tensors)
        fetches = (_Output * len(out_keys))(
            *[self._output(spec["outputs"][k]["name"]) for k in out_keys])
        results = (ctypes.c_void_p * len(out_keys))()
        try:
            self.lib.TF_SessionRun(self.session, None, feeds, values, len(keys),
                                   fetches, results, len(out_keys), None, 0, None,
                                   self.status)
            self._check("TF_SessionRun")
            return {k: self._to_numpy(results[j]) for j, k in enumerate(out_keys)}
        finally:
            for tensor in tensors:
                self.lib.TF_DeleteTensor(tensor)
            for j in range(len(out_keys)):
                if results[j]:
                    self.lib.TF_DeleteTensor(results[j])

    def close(self):
        if self.session:
            self.lib.TF_CloseSession(self.session, self.status)
            self.lib.TF_DeleteSession(self.session, self.status)
            self.session = None


def latency_ms(model, feed, requests, warmup=20):
    """`(p50, p99)` milliseconds of `model.run(feed)` over `requests` runs,
    after `warmup` untimed ones (one request at a time, as a server sees
    them)."""
    for _ in range(warmup):
        model.run(feed)
    times = []
    for _ in range(requests):
        start = time.perf_counter()
        model.run(feed)
        times.append(time.perf_counter() - start)
    return tuple(1e3 * float(np.percentile(times, q)) for q in (50, 99))
