"""The ``backend`` argument every cnnrepro module and model builder takes: "custom" runs our kernels,
"native" the PyTorch modules they replace."""

BACKENDS = ("custom", "native")


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend
