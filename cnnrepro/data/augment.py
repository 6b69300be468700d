"""Keras' ``ImageDataGenerator`` augmentation, as Keras computes it, applied to a whole batch at
once on the batch's device.

Per image: theta ~ U(-rotation_range, rotation_range) degrees; a shift ~ U(-r, r), times the side
when r < 1 (an int r: a whole pixel from range(r) with a random sign, Keras' np.random.choice);
shear ~ U(-shear_range, shear_range) degrees; zx, zy ~ U(1 - z, 1 + z), drawn independently. The
matrix ``R . T . Sh . Z`` (shear ``[[1, -sin s], [0, cos s]]``) maps an output pixel's (row, col) to
the input's, about the centre ``(h / 2 + o, w / 2 + o)`` of ``transform_matrix_offset_center``:
o = -0.5, the middle pixel, in later tf.keras releases' own keras/preprocessing/image.py (the
default); o = +0.5 in keras-preprocessing 1.1.2, its last release, which standalone Keras 2.2-2.3
and the tf.keras of the tutorials' time used (``centre_offset``: the two differ by a pixel about
which rotation, shear and zoom turn). Keras' tx
moves rows (height_shift_range) and zx scales them. The input is sampled bilinearly
(scipy.ndimage's order 1) with scipy's fill modes: nearest (clamped), constant (``cval`` outside
[0, n - 1]), reflect (half-sample symmetric), wrap (period n - 1, scipy's legacy wrap). Then the
flips, each with probability 1/2.

Draws come from the run's augmentation generator on the CPU (one tensor per parameter for the whole
batch, not Keras' per-image order), so a seed gives the same transforms on every device. Sampling is
``F.grid_sample``'s forward, deterministic on CUDA too: only its backward accumulates with atomics,
and augmentation needs no gradient (models.cuda_determinism lists backward ops for that reason).
"""

import functools
import math
from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

import torch
import torch.nn.functional as F

FILL_MODES = ("nearest", "constant", "reflect", "wrap")


class Transform(NamedTuple):
    """One batch's drawn parameters, a float64 (or bool) tensor of N each."""

    theta: torch.Tensor  # degrees
    tx: torch.Tensor  # rows (pixels)
    ty: torch.Tensor  # columns (pixels)
    shear: torch.Tensor  # degrees
    zx: torch.Tensor  # rows
    zy: torch.Tensor  # columns
    horizontal_flip: torch.Tensor
    vertical_flip: torch.Tensor


@dataclass(frozen=True)
class KerasAugment:
    """ImageDataGenerator's geometric arguments (their Keras names and defaults)."""

    rotation_range: float = 0.0
    width_shift_range: float = 0.0
    height_shift_range: float = 0.0
    shear_range: float = 0.0
    zoom_range: float = 0.0
    horizontal_flip: bool = False
    vertical_flip: bool = False
    fill_mode: str = "nearest"
    cval: float = 0.0  # raw pixel units (0-255), as Keras fills before rescaling
    centre_offset: float = -0.5  # -0.5: later tf.keras; +0.5: keras-preprocessing 1.1.2

    def __post_init__(self):
        if self.centre_offset not in (-0.5, 0.5):
            raise ValueError(
                f"centre_offset is -0.5 (Keras) or 0.5 (keras-preprocessing), got {self.centre_offset}"
            )
        if self.fill_mode not in FILL_MODES:
            raise ValueError(f"fill_mode must be one of {FILL_MODES}, got {self.fill_mode!r}")
        ranges = ("rotation_range", "width_shift_range", "height_shift_range", "shear_range", "zoom_range")
        negative = [name for name in ranges if getattr(self, name) < 0]
        if negative or self.zoom_range >= 1:
            raise ValueError(f"augmentation ranges must be >= 0 and zoom_range < 1, got {self}")

    @classmethod
    def from_pairs(cls, pairs) -> "KerasAugment":
        """From RunConfig.augment's (name, value) pairs; a ValueError names an unknown argument."""
        known = {f.name for f in fields(cls)}
        unknown = [name for name, _ in pairs if name not in known]
        if unknown:
            raise ValueError(f"unknown augmentation {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**dict(pairs))

    def pairs(self) -> tuple[tuple[str, object], ...]:
        """The arguments that differ from Keras' defaults, sorted: RunConfig.augment's form."""
        defaults = KerasAugment()
        return tuple(sorted((k, v) for k, v in asdict(self).items() if v != getattr(defaults, k)))

    def draw(self, n: int, height: int, width: int, generator: torch.Generator) -> Transform:
        """N images' parameters, drawn in a fixed order (only those whose range is set)."""

        def uniform(low: float, high: float) -> torch.Tensor:
            return torch.rand(n, generator=generator, dtype=torch.float64) * (high - low) + low

        def symmetric(r: float) -> torch.Tensor:
            return uniform(-r, r) if r else torch.zeros(n, dtype=torch.float64)

        def shift(r, side: int) -> torch.Tensor:
            if isinstance(r, int) and not isinstance(r, bool) and r >= 1:
                pixels = torch.randint(0, r, (n,), generator=generator).double()
                return pixels * (torch.randint(0, 2, (n,), generator=generator) * 2 - 1)
            return symmetric(r) * (side if r < 1 else 1)

        def coin(enabled: bool) -> torch.Tensor:
            return torch.rand(n, generator=generator).lt(0.5) if enabled else torch.zeros(n, dtype=torch.bool)

        theta = symmetric(self.rotation_range)
        tx = shift(self.height_shift_range, height)
        ty = shift(self.width_shift_range, width)
        shear = symmetric(self.shear_range)
        z = self.zoom_range
        zx, zy = (uniform(1 - z, 1 + z), uniform(1 - z, 1 + z)) if z else (torch.ones(n).double(),) * 2
        return Transform(theta, tx, ty, shear, zx, zy, coin(self.horizontal_flip), coin(self.vertical_flip))

    def __call__(self, images: torch.Tensor, generator: torch.Generator, fill=0.0) -> torch.Tensor:
        """A randomly transformed copy of the (N, C, H, W) batch; ``fill`` is the constant mode's value
        in the images' units (see :func:`normalized_fill`)."""
        n, _, h, w = images.shape
        return apply(images, self.draw(n, h, w, generator), self.fill_mode, fill, self.centre_offset)


def batch_augmentation(pairs, dataset):
    """What augments a run's training batches, as ``batches``' ``augment`` takes it: the Keras
    augmentation of RunConfig.augment's ``pairs`` (its constant fill in ``dataset``'s normalized
    units), else, with none, the dataset's own (``dataset.augment``: CIFAR's crop + flip, or False)."""
    if not pairs:
        return dataset.augment
    keras = KerasAugment.from_pairs(pairs)
    return functools.partial(keras, fill=normalized_fill(keras.cval, dataset.mean, dataset.std))


def normalized_fill(cval: float, mean, std) -> torch.Tensor:
    """Keras' ``cval`` (raw 0-255) in a normalized batch's units, per channel."""
    return (cval / 255.0 - torch.tensor(mean, dtype=torch.float64)) / torch.tensor(std, dtype=torch.float64)


def matrices(transform: Transform, height: int, width: int, centre_offset: float = -0.5) -> torch.Tensor:
    """(N, 3, 3) float64: output (row, col, 1) -> input, Keras' R . T . Sh . Z about the centre."""
    n = len(transform.theta)
    theta, shear = transform.theta * (math.pi / 180), transform.shear * (math.pi / 180)
    eye = torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)
    rotation, shift, shearing, zoom = eye.clone(), eye.clone(), eye.clone(), eye.clone()
    rotation[:, 0, 0], rotation[:, 0, 1] = theta.cos(), -theta.sin()
    rotation[:, 1, 0], rotation[:, 1, 1] = theta.sin(), theta.cos()
    shift[:, 0, 2], shift[:, 1, 2] = transform.tx, transform.ty
    shearing[:, 0, 1], shearing[:, 1, 1] = -shear.sin(), shear.cos()
    zoom[:, 0, 0], zoom[:, 1, 1] = transform.zx, transform.zy
    centre, back = eye[0].clone(), eye[0].clone()
    centre[0, 2], centre[1, 2] = height / 2 + centre_offset, width / 2 + centre_offset
    back[0, 2], back[1, 2] = -centre[0, 2], -centre[1, 2]
    return centre @ rotation @ shift @ shearing @ zoom @ back


def fold(coordinate: torch.Tensor, size: int, fill_mode: str) -> torch.Tensor:
    """Input coordinates (pixel centres 0..size-1) brought inside the image as scipy's mode does."""
    if fill_mode == "reflect":
        period = coordinate.add(0.5).remainder(2 * size)
        coordinate = torch.where(period >= size, 2 * size - period, period) - 0.5
    elif fill_mode == "wrap" and size > 1:  # outside [0, size - 1] only: its ends overlap
        outside = (coordinate < 0) | (coordinate > size - 1)
        coordinate = torch.where(outside, coordinate.remainder(size - 1), coordinate)
    return coordinate.clamp(0, size - 1)


def moved(transform: Transform) -> torch.Tensor:
    """(N,) bool: whether each image's affine part is not the identity (Keras leaves those as they are)."""
    shifts = (transform.theta != 0) | (transform.tx != 0) | (transform.ty != 0) | (transform.shear != 0)
    return shifts | (transform.zx != 1) | (transform.zy != 1)


def sample(
    images: torch.Tensor, transform: Transform, fill_mode: str, fill, centre_offset: float
) -> torch.Tensor:
    """Every image resampled through its matrix: bilinear, out-of-image sources by ``fill_mode``."""
    n, c, h, w = images.shape
    matrix = matrices(transform, h, w, centre_offset).to(images.device, torch.float32)
    rows, cols = torch.meshgrid(
        torch.arange(h, dtype=torch.float32, device=images.device),
        torch.arange(w, dtype=torch.float32, device=images.device),
        indexing="ij",
    )
    source = [
        matrix[:, i, 0, None, None] * rows + matrix[:, i, 1, None, None] * cols + matrix[:, i, 2, None, None]
        for i in (0, 1)
    ]
    row, col = fold(source[0], h, fill_mode), fold(source[1], w, fill_mode)
    grid = torch.stack([(2 * col + 1) / w - 1, (2 * row + 1) / h - 1], dim=-1)
    out = F.grid_sample(
        images, grid.to(images.dtype), mode="bilinear", padding_mode="border", align_corners=False
    )
    if fill_mode == "constant":
        inside = (source[0] >= 0) & (source[0] <= h - 1) & (source[1] >= 0) & (source[1] <= w - 1)
        value = torch.as_tensor(fill, dtype=out.dtype, device=out.device).reshape(1, -1, 1, 1)
        out = torch.where(inside[:, None], out, value.expand(n, c, 1, 1))
    return out


def apply(
    images: torch.Tensor,
    transform: Transform,
    fill_mode: str = "nearest",
    fill=0.0,
    centre_offset: float = -0.5,
) -> torch.Tensor:
    """The batch transformed by ``transform`` (images whose affine part is the identity untouched,
    as Keras leaves them), then flipped."""
    n, moving = images.shape[0], moved(transform)  # on the CPU: no wait for the device
    change = moving.to(images.device).view(n, 1, 1, 1)
    if moving.any():
        out = torch.where(change, sample(images, transform, fill_mode, fill, centre_offset), images)
    else:
        out = images
    flips = (transform.horizontal_flip.to(out.device), transform.vertical_flip.to(out.device))
    out = torch.where(flips[0].view(n, 1, 1, 1), out.flip(-1), out)
    return torch.where(flips[1].view(n, 1, 1, 1), out.flip(-2), out)
