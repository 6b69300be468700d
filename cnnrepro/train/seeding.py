"""One run seed, several independent streams: init, data order, augmentation, dropout."""

import hashlib
import os

import torch

PURPOSES = ("init", "data", "augment", "dropout")


def derive_seed(run_seed: int, purpose: str) -> int:
    """A 63-bit seed for one purpose, derived from the run seed by hashing: streams that do not
    overlap, and that stay the same when another purpose's use of randomness changes."""
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {PURPOSES}, got {purpose!r}")
    digest = hashlib.sha256(f"cnnrepro:{run_seed}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def generator(run_seed: int, purpose: str, device="cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(derive_seed(run_seed, purpose))


def set_deterministic() -> None:
    """Deterministic kernels everywhere (an op without one raises instead of running), no cuDNN
    autotuning, and the cuBLAS workspace setting that deterministic GEMMs need."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def numerics_settings() -> dict:
    """The switches that change a run's bits on the same hardware, as the runner records them in
    env.json: deterministic kernels, cuDNN's autotuner, TF32 (on by default for cuDNN convolutions
    on Ampere and newer GPUs: results differ from float32's) and cuBLAS's workspace."""
    return {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "CUBLAS_WORKSPACE_CONFIG": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    }
