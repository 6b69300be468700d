"""The in-memory dataset: uint8 images in, normalized float tensors out."""

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass
class Split:
    """One split: images (N, C, H, W) float32, normalized; labels (N,) int64.

    Or raw: uint8 images (an image folder's memory-mapped cache, larger than RAM) with the ``mean``
    and ``std`` that :meth:`rows` normalizes each batch by, so only the rows a batch reads are in
    memory as floats."""

    images: torch.Tensor
    labels: torch.Tensor
    mean: tuple[float, ...] | None = None  # set for raw (uint8) images only
    std: tuple[float, ...] | None = None

    def __post_init__(self):
        if self.images.shape[0] != self.labels.shape[0]:
            raise ValueError(f"{self.images.shape[0]} images but {self.labels.shape[0]} labels")
        if (self.images.dtype == torch.uint8) != (self.mean is not None):
            raise ValueError("uint8 images need the mean and std to normalize them by, float ones none")

    def __len__(self) -> int:
        return self.labels.shape[0]

    def rows(self, index) -> torch.Tensor:
        """The images at ``index`` (a tensor of indices or a slice), normalized float32."""
        images = self.images[index]
        return images if self.mean is None else normalized(images, self.mean, self.std)

    def head(self, n: int) -> "Split":
        """The first ``n`` examples (a view: a memory-mapped split stays mapped)."""
        return dataclasses.replace(self, images=self.images[:n], labels=self.labels[:n])

    def to(self, device) -> "Split":
        return dataclasses.replace(self, images=self.images.to(device), labels=self.labels.to(device))


@dataclass
class Dataset:
    """A named dataset: its splits, classes and the normalization that was applied."""

    name: str
    train: Split
    test: Split
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool = False  # pad-4 random crop + flip on training batches (CIFAR, as He et al.)
    notes: dict = field(default_factory=dict)

    @property
    def in_channels(self) -> int:
        return self.train.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.train.images.shape[-1]

    def resized(self, size: int) -> "Dataset":
        """The same data at size x size (bilinear, once, in memory): a profile's input resolution."""
        if size == self.image_size:
            return self

        def resize(split: Split) -> Split:  # a raw split becomes float in memory
            images = F.interpolate(
                split.rows(slice(None)), size=(size, size), mode="bilinear", align_corners=False
            )
            return Split(images, split.labels)

        return dataclasses.replace(
            self, train=resize(self.train), test=resize(self.test), notes={**self.notes, "resized_to": size}
        )

    def to(self, device) -> "Dataset":
        """The whole dataset on ``device`` (e.g. the GPU, to skip host-to-device copies per batch)."""
        return dataclasses.replace(self, train=self.train.to(device), test=self.test.to(device))


def normalized(images_uint8: torch.Tensor, mean, std) -> torch.Tensor:
    """(N, C, H, W) uint8 -> float32 in [0, 1], then (x - mean) / std per channel."""
    images = images_uint8.float().div_(255.0)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return images.sub_(mean_t).div_(std_t)


def channel_stats(images_uint8: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images, in [0, 1] units (computed on the training split)."""
    images = images_uint8.double().div(255.0)
    mean = images.mean(dim=(0, 2, 3))
    std = images.std(dim=(0, 2, 3))
    return tuple(round(v, 4) for v in mean.tolist()), tuple(round(v, 4) for v in std.tolist())


def round_robin(groups: list[torch.Tensor]) -> torch.Tensor:
    """The groups' elements interleaved: the first of each group, then the second of each...; so
    every prefix of a class-by-class list is as balanced over the classes as it can be."""
    longest = max(len(g) for g in groups)
    return torch.cat([g[i : i + 1] for i in range(longest) for g in groups])
