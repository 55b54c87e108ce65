"""Inspecting exported SavedModels in tests and benchmarks: which ops a
serving request runs, and that none of them writes state (TensorFlow-only
module)."""

import pathlib

# Ops that write a variable or table: none may run in a serving request.
WRITE_OPS = ("Assign", "ResourceScatter", "ScatterNd", "TensorScatter",
             "ResourceApply", "LookupTableInsert", "LookupTableImport")


def serving_ops(export_dir, signature="serving_default"):
    """Op types that a `signature` request runs: the signature's function
    and every function it calls, transitively (not the restore graph)."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((pathlib.Path(export_dir) / "saved_model.pb").read_bytes())
    meta = proto.meta_graphs[0]
    functions = {f.signature.name: f for f in meta.graph_def.library.function}
    outputs = {t.name.split(":")[0] for t in meta.signature_def[signature].outputs.values()}
    nodes = {n.name: n for n in meta.graph_def.node}
    pending = []
    for name in outputs:
        node = nodes[name]
        for attr in node.attr.values():
            if attr.func.name:
                pending.append(attr.func.name)
    ops, seen = set(), set()
    while pending:
        name = pending.pop()
        if name in seen or name not in functions:
            continue
        seen.add(name)
        for node in functions[name].node_def:
            ops.add(node.op)
            for attr in node.attr.values():
                if attr.func.name:
                    pending.append(attr.func.name)
                for f in attr.list.func:
                    pending.append(f.name)
    if not seen:
        raise ValueError(f"No function behind the {signature} outputs {outputs}.")
    return ops


def check_serving_graph(export_dir):
    """Stock ops only, and none that writes a variable (no counting)."""
    from tensorflow.python.framework import op_def_registry

    ops = serving_ops(export_dir)
    python = ops & {"PyFunc", "PyFuncStateless", "EagerPyFunc"}
    if python:
        raise AssertionError(f"The serving graph calls Python: {sorted(python)}")
    unknown = sorted(op for op in ops if op_def_registry.get(op) is None)
    if unknown:
        raise AssertionError(f"The serving graph has non-stock ops: {unknown}")
    writes = sorted(op for op in ops if op.startswith(WRITE_OPS))
    if writes:
        raise AssertionError(f"The serving graph writes state: {writes}")
    return ops
