"""Runs facebookresearch/dlrm's `dlrm_s_pytorch.py` (path in argv[1]) without
tensorboard or scikit-learn installed: they only serve its logging and test
metrics, which the timing runs of `bench_sparse_dlrm.py` and
`bench_vs_reference.py` (through `install_stubs`) do not use. The
`sklearn` folder next to this file is an empty stand-in for its import."""

import runpy
import sys
import types


class _NoSummaryWriter:
    def __init__(self, *args, **kwargs):
        pass

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def install_stubs():
    """Puts the do-nothing `torch.utils.tensorboard` in `sys.modules` (the
    `sklearn` stand-in is found through this folder on `sys.path`)."""
    tensorboard = types.ModuleType("torch.utils.tensorboard")
    tensorboard.SummaryWriter = _NoSummaryWriter
    sys.modules["torch.utils.tensorboard"] = tensorboard


if __name__ == "__main__":
    install_stubs()
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    runpy.run_path(script, run_name="__main__")
