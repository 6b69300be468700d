"""Seeded mini-batches from an in-memory split: no DataLoader, no workers, the same batches for
the same generator state."""

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from cnnrepro.data.dataset import Split


def random_crop_flip(images: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """He et al.'s CIFAR augmentation: zero-pad by ``pad``, take a random crop of the original size,
    flip horizontally with probability 1/2. One draw per image from ``generator``."""
    n, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).tolist()
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).tolist()
    flip = torch.rand(n, generator=generator).lt(0.5).tolist()
    out = torch.empty_like(images)
    for i in range(n):
        crop = padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
        out[i] = crop.flip(-1) if flip[i] else crop
    return out


def batches(
    split: Split,
    batch_size: int,
    generator: torch.Generator | None = None,
    shuffle: bool = True,
    augment: bool | Callable[[torch.Tensor, torch.Generator], torch.Tensor] = False,
    drop_last: bool = False,
    augment_generator: torch.Generator | None = None,
    share: Callable[[int], slice] | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(images, labels) batches over one pass of ``split``.

    The order is a permutation drawn from ``generator`` (shuffle=True), and augmentation draws
    from ``augment_generator`` (default: the same generator), so seeded generators give the same
    batches every time. ``augment`` is True (CIFAR's :func:`random_crop_flip`) or a function of
    (images, generator), such as a :class:`~cnnrepro.data.augment.KerasAugment`. Evaluation uses
    shuffle=False, augment=False: no randomness at all.

    ``share(n)`` picks the rows of each batch of ``n`` to yield (a rank's share in data-parallel
    training); the order and the augmentation are drawn for the whole batch all the same, so every
    share is cut from the batches one process would see.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if (shuffle or augment) and generator is None:
        raise ValueError("shuffled or augmented batches need a seeded torch.Generator")
    augmentation = random_crop_flip if augment is True else augment
    n = len(split)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    order = order.to(split.images.device)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        index = order[start : start + batch_size]
        rows = share(len(index)) if share is not None else slice(None)
        if augment:
            images = augmentation(split.rows(index), augment_generator or generator)[rows]
        else:
            images = split.rows(index[rows])
        yield images, split.labels[index[rows]]
