"""The pictures of a run, as matplotlib Figures (the object API, never pyplot's global state): a
layer's feature maps, the first convolution's filters, an input image, an overview of a few depths.
``cnnrepro.report.figures.png_bytes`` turns each into PNG bytes with no timestamp, so the same run
and image give the same bytes."""

import math

import numpy as np
import torch
from matplotlib.figure import Figure

ROW = 32  # maps tiled in one row up to this many; past it, a grid of rows this long
FILTER_ROW = 16  # filters a row
OVERVIEW_MAPS = 16  # maps a layer in the overview
SCALE = 2.0  # standardized maps shown from -SCALE to +SCALE sd: the tutorials' x * 64 + 128, clipped
MAP_COLORS = "viridis"
TITLE_INCHES = 0.35


def standardized(maps: torch.Tensor) -> np.ndarray:
    """(C, H, W) maps, each to mean 0 and sd 1 (a constant map: all 0), as float64."""
    maps = maps.detach().double().cpu()
    mean = maps.mean(dim=(1, 2), keepdim=True)
    sd = maps.std(dim=(1, 2), keepdim=True, unbiased=False)
    return ((maps - mean) / torch.where(sd > 0, sd, torch.ones_like(sd))).numpy()


def tiled(images: np.ndarray, columns: int, gap_value: float = np.nan) -> np.ndarray:
    """(N, H, W[, 3]) images in a grid of ``columns``, one pixel of ``gap_value`` between them."""
    n, height, width = images.shape[:3]
    rows = math.ceil(n / columns)
    grid = np.full((rows * (height + 1) - 1, columns * (width + 1) - 1, *images.shape[3:]), gap_value)
    for i, image in enumerate(images):
        top, left = (i // columns) * (height + 1), (i % columns) * (width + 1)
        grid[top : top + height, left : left + width] = image
    return grid


def show_maps(ax, maps: torch.Tensor, columns: int) -> None:
    """Standardized maps, tiled, on the fixed colour scale; gaps in white."""
    ax.imshow(
        tiled(standardized(maps), columns), cmap=MAP_COLORS, vmin=-SCALE, vmax=SCALE, interpolation="nearest"
    )
    ax.set_axis_off()


def titled_canvas(width: float, height: float, title: str):
    """(figure, axes): an axes of ``width`` x ``height`` inches under a one-line title. Fixed
    positions rather than a layout engine: a tiled picture needs none, and it is the costly part."""
    total = height + TITLE_INCHES
    fig = Figure(figsize=(width, total))
    ax = fig.add_axes((0.01, 0.02, 0.98, height / total - 0.04))
    fig.text(0.5, 1 - TITLE_INCHES / 2 / total, title, ha="center", va="center", fontsize=9)
    return fig, ax


def layer_figure(path: str, kind: str, maps: torch.Tensor) -> Figure:
    """Every map of one image's layer output (C, H, W): in a row, or rows of ROW past ROW maps,
    titled with the module path, its class and the output's shape."""
    channels, height, width = maps.shape
    columns = min(channels, ROW)
    rows = math.ceil(channels / columns)
    cell = min(1.0, max(0.35, width / 64))  # inches per map: small maps enlarged, large ones kept
    title = (
        f"{path} ({kind}): {channels} x {height} x {width}, "
        f"each map standardized (-{SCALE:g} to +{SCALE:g} sd)"
    )
    fig, ax = titled_canvas(max(5.0, columns * cell), rows * cell * height / width, title)
    show_maps(ax, maps, columns)
    return fig


def filter_images(weight: torch.Tensor) -> np.ndarray:
    """Conv weights (O, I, kh, kw) as images in [0, 1], each filter scaled by its own range (as
    AlexNet's Figure 3): (O, kh, kw, 3) in colour for RGB inputs, else (O, kh, kw), the mean over
    the input channels."""
    weight = weight.detach().double().cpu()
    images = weight.permute(0, 2, 3, 1) if weight.shape[1] == 3 else weight.mean(dim=1)
    flat = images.reshape(len(images), -1)
    low, high = flat.min(dim=1).values, flat.max(dim=1).values
    shape = (-1,) + (1,) * (images.dim() - 1)
    spread = torch.where(high > low, high - low, torch.ones_like(high))
    return ((images - low.view(shape)) / spread.view(shape)).numpy()


def show_filters(ax, images: np.ndarray, columns: int) -> None:
    """Filter images (from filter_images), tiled with white gaps."""
    ax.imshow(tiled(images, columns, 1.0), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()


def filters_figure(path: str, weight: torch.Tensor) -> Figure:
    """The first convolution's filters as an image grid, FILTER_ROW a row (RGB in colour, else grey)."""
    images = filter_images(weight)
    columns = min(len(images), FILTER_ROW)
    rows = math.ceil(len(images) / columns)
    out_channels, in_channels, kh, kw = weight.shape
    title = f"{path}: {out_channels} filters, {in_channels} x {kh} x {kw}"
    fig, ax = titled_canvas(max(3.5, columns * 0.45), rows * 0.45, title)
    show_filters(ax, images, columns)
    return fig


def input_image(image: torch.Tensor, mean, std) -> np.ndarray:
    """A normalized (C, H, W) image back in [0, 1]: (H, W, 3) in colour, (H, W) grey otherwise."""
    mean, std = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)
    pixels = (image.detach().double().cpu() * std + mean).clamp(0, 1)
    return pixels.permute(1, 2, 0).numpy() if len(pixels) == 3 else pixels.mean(dim=0).numpy()


def show_image(ax, pixels: np.ndarray, title: str) -> None:
    """An image in [0, 1] (grey, or RGB), titled, without axes."""
    ax.imshow(pixels, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()


def overview_figure(
    title: str, pixels: np.ndarray, filters: tuple[str, torch.Tensor] | None, layers: dict
) -> Figure:
    """A small picture of one run: the input image and the first layer's filters on top, then a
    row per layer of ``layers`` (path -> (C, H, W) maps) with its first OVERVIEW_MAPS maps."""
    fig = Figure(figsize=(8, 1.3 * (1 + len(layers)) + 0.4), layout="constrained")
    grid = fig.add_gridspec(1 + len(layers), 4)
    show_image(fig.add_subplot(grid[0, 0]), pixels, "input")
    if filters is not None:
        path, weight = filters
        ax = fig.add_subplot(grid[0, 1:])
        images = filter_images(weight)[: 2 * FILTER_ROW]
        show_filters(ax, images, min(len(images), FILTER_ROW))
        ax.set_title(f"{path}: {len(images)} of {len(weight)} filters", fontsize=8)
    for row, (path, maps) in enumerate(layers.items(), start=1):
        ax = fig.add_subplot(grid[row, :])
        shown = maps[:OVERVIEW_MAPS]
        show_maps(ax, shown, len(shown))
        ax.set_title(
            f"{path}: {len(shown)} of {len(maps)} maps, {maps.shape[1]} x {maps.shape[2]}", fontsize=8
        )
    fig.suptitle(title, fontsize=9)
    return fig


def mistakes_figure(images: list[np.ndarray], titles: list[str]) -> Figure:
    """Test images in a row, each titled (true class, predicted class and its probability)."""
    fig = Figure(figsize=(1.4 * max(1, len(images)), 1.7), layout="constrained")
    for ax, pixels, title in zip(
        fig.subplots(1, max(1, len(images)), squeeze=False).ravel(), images, titles, strict=False
    ):
        show_image(ax, pixels, title)
    return fig


def image_figure(pixels: np.ndarray, title: str) -> Figure:
    """One input image, titled."""
    fig, ax = titled_canvas(2.2, 2.2, title)
    show_image(ax, pixels, "")
    return fig
