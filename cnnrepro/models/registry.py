"""Models by name: ``register_model`` for builders, ``get_model`` and ``list_models`` for users.

Every builder takes ``num_classes``, ``in_channels``, ``backend`` and ``width`` (a channel
multiplier: profiles may scale width and resolution, never the layer sequence), plus its own
config; each carries :class:`ModelInfo`, reachable as ``model.info``.
"""

import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch

from cnnrepro.nn import check_backend


@dataclass(frozen=True)
class ModelInfo:
    name: str
    family: str
    paper: str
    year: int
    input_size: int  # the canonical (paper's) input resolution
    min_input_size: int  # the smallest resolution the layer sequence accepts
    num_classes: int  # the canonical number of classes
    in_channels: int
    published_params: int | None  # where a count was published: at published_config
    builder: Callable[..., torch.nn.Module]
    published_config: tuple[tuple[str, object], ...] = ()  # builder arguments the count is for
    published_digits: int | None = None  # significant digits the source gives; None: exact
    published_note: str = ""  # what the reader should know about the published config
    published_weights_only: bool = False  # the source counted conv and FC weights alone (no BN, no biases)
    # Builder arguments that switch on the parts its defaults leave out (GoogLeNet's auxiliary
    # heads): the tests that trace or transplant every module build the model with them.
    optional_parts: tuple[tuple[str, object], ...] = ()


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(
    name: str,
    *,
    family: str,
    paper: str,
    year: int,
    input_size: int,
    min_input_size: int,
    num_classes: int = 1000,
    in_channels: int = 3,
    published_params: int | None = None,
    published_config: tuple[tuple[str, object], ...] = (),
    published_digits: int | None = None,
    published_note: str = "",
    published_weights_only: bool = False,
    optional_parts: tuple[tuple[str, object], ...] = (),
):
    """Registers the decorated builder under ``name``; a name can be registered once."""

    def decorate(builder):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        if not builder.__doc__:
            raise ValueError(
                f"model {name!r}: its builder needs a docstring naming the paper and any difference"
            )
        _REGISTRY[name] = ModelInfo(
            name,
            family,
            paper,
            year,
            input_size,
            min_input_size,
            num_classes,
            in_channels,
            published_params,
            builder,
            published_config,
            published_digits,
            published_note,
            published_weights_only,
            optional_parts,
        )
        return builder

    return decorate


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style pattern (``"resnet*"``), sorted."""
    return sorted(fnmatch.filter(_REGISTRY, pattern))


def model_info(name: str) -> ModelInfo:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def builder_accepts(name: str, argument: str) -> bool:
    """Whether model ``name``'s builder takes ``argument`` (e.g. input_size, for an FC head)."""
    return argument in inspect.signature(model_info(name).builder).parameters


def get_model(
    name: str,
    num_classes: int | None = None,
    in_channels: int | None = None,
    backend: str = "custom",
    width: float = 1.0,
    **config,
) -> torch.nn.Module:
    """A new model ``name``; num_classes, in_channels default to the canonical ones."""
    info = model_info(name)
    check_backend(backend)
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}")
    model = info.builder(
        num_classes=num_classes or info.num_classes,
        in_channels=in_channels or info.in_channels,
        backend=backend,
        width=width,
        **config,
    )
    model.info = info
    return model
