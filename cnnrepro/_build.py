"""Loading the compiled extension and reporting what it was built with."""

import torch

try:
    from cnnrepro import _C
except ImportError as error:  # pragma: no cover - only without a build
    raise ImportError(
        "cnnrepro._C is not built. Build it with `pip install --no-build-isolation -e .` "
        "(or `make test`, which sets everything up)."
    ) from error


def build_info() -> dict:
    """What ``cnnrepro._C`` was built with (torch, CUDA, arch list, compiler) and what runs it now.

    ``torch_matches`` is False when the extension was built against another torch than the one
    imported: rebuild then, since the C++ ABI is not stable across releases.
    """
    info = dict(_C.build_info())
    info["runtime_torch_version"] = torch.__version__
    info["torch_matches"] = info["torch_version"] == torch.__version__
    info["cuda_available"] = torch.cuda.is_available()
    return info
