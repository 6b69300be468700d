"""The ``backend`` argument every cnnrepro module takes."""

BACKENDS = ("custom", "native")


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend
