"""Ops with no deterministic CUDA backward: ``torch.use_deterministic_algorithms(True)``, which the
runner turns on, makes them raise on a GPU. Listed as module kinds and as the aten ops they (or a
functional call) run, so a model that uses one is caught on a CPU, before a GPU run fails.

From PyTorch's documentation of ``use_deterministic_algorithms`` (the ops that "throw a
RuntimeError" on CUDA). Nearest-neighbour ``Upsample`` is deterministic, but every ``Upsample`` is
listed: its mode can change after construction.
"""

import torch

NONDETERMINISTIC_CUDA_MODULES = (
    torch.nn.AdaptiveAvgPool2d,
    torch.nn.AdaptiveAvgPool3d,
    torch.nn.AdaptiveMaxPool2d,
    torch.nn.AvgPool3d,
    torch.nn.MaxPool3d,
    torch.nn.FractionalMaxPool2d,
    torch.nn.FractionalMaxPool3d,
    torch.nn.MaxUnpool1d,
    torch.nn.MaxUnpool2d,
    torch.nn.MaxUnpool3d,
    torch.nn.Upsample,
    torch.nn.ReflectionPad1d,
    torch.nn.ReflectionPad2d,
    torch.nn.ReflectionPad3d,
    torch.nn.ReplicationPad3d,
    torch.nn.CTCLoss,
    torch.nn.EmbeddingBag,
)

NONDETERMINISTIC_CUDA_OPS = frozenset(
    f"aten::{op}"
    for op in (
        "_adaptive_avg_pool2d_backward",
        "_adaptive_avg_pool3d_backward",
        "adaptive_max_pool2d_backward",
        "avg_pool3d_backward",
        "max_pool3d_with_indices_backward",
        "fractional_max_pool2d_backward",
        "fractional_max_pool3d_backward",
        "max_unpool2d",
        "max_unpool3d",
        "upsample_linear1d_backward",
        "upsample_bilinear2d_backward",
        "upsample_bicubic2d_backward",
        "upsample_trilinear3d_backward",
        "reflection_pad1d_backward",
        "reflection_pad2d_backward",
        "reflection_pad3d_backward",
        "replication_pad3d_backward",
        "_ctc_loss_backward",
        "_embedding_bag_dense_backward",
        "grid_sampler_2d_backward",
        "grid_sampler_3d_backward",
        "histc",
        "bincount",
        "kthvalue",
        "median",
        "put_",
    )
)


def nondeterministic_modules(model: torch.nn.Module) -> list[str]:
    """ "path (Kind)" of every module of ``model`` in NONDETERMINISTIC_CUDA_MODULES."""
    return [
        f"{path} ({type(module).__name__})"
        for path, module in model.named_modules()
        if isinstance(module, NONDETERMINISTIC_CUDA_MODULES)
    ]


def nondeterministic_ops(step) -> list[str]:
    """The aten ops in NONDETERMINISTIC_CUDA_OPS that ``step()`` runs (forward and backward),
    traced by the profiler on whatever device ``step`` uses."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as trace:
        step()
    return sorted({event.key for event in trace.key_averages() if event.key in NONDETERMINISTIC_CUDA_OPS})
