"""The model zoo: every classic architecture by name, on custom or native kernels.

models.list_models("resnet*")
models.get_model("alexnet", num_classes=10, in_channels=1, backend="custom", width=0.25)
models.summary(model, (1, 1, 224, 224))
models.load_torchvision_state_dict(models.get_model("resnet18"), torchvision_resnet18.state_dict())
"""

from cnnrepro.models import alexnet, d2l, densenet, googlenet, lenet, nin, resnet, vgg  # noqa: F401  (register)
from cnnrepro.models.cuda_determinism import nondeterministic_modules, nondeterministic_ops
from cnnrepro.models.registry import (
    ModelInfo,
    builder_accepts,
    get_model,
    list_models,
    model_info,
    register_model,
)
from cnnrepro.models.summary import count_parameters, summary
from cnnrepro.models.torchvision_weights import (
    TORCHVISION_MODELS,
    load_torchvision_state_dict,
    torchvision_key_map,
)

__all__ = [
    "TORCHVISION_MODELS",
    "load_torchvision_state_dict",
    "torchvision_key_map",
    "builder_accepts",
    "ModelInfo",
    "count_parameters",
    "nondeterministic_modules",
    "nondeterministic_ops",
    "get_model",
    "list_models",
    "model_info",
    "register_model",
    "summary",
]
