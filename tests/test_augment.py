"""Keras' ImageDataGenerator augmentation against two oracles: Keras' own code, keras-preprocessing
1.1.2's ``apply_affine_transform`` (a test extra; its centre is +0.5), and one written here from
later tf.keras's (the same matrices about the middle pixel, -0.5, through scipy.ndimage's
``affine_transform`` at order 1 with Keras' fill modes); and the seeded draws."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from cnnrepro.data import augment, load_dataset
from cnnrepro.data.augment import KerasAugment, Transform
from cnnrepro.train import RunConfig, train_run

# float32 coordinates and weights against scipy's float64, on pixels in [0, 1]: measured at most
# 2.0e-6 over these cases (a source within float32 rounding of the border could land on its other
# side in constant mode; none of these cases has one).
TOLERANCE = 1e-5


def keras_oracle(
    image: np.ndarray, theta=0.0, tx=0.0, ty=0.0, shear=0.0, zx=1.0, zy=1.0, fill_mode="nearest", cval=0.0
):
    """keras-preprocessing 1.1's apply_affine_transform on a (C, H, W) image, channel axis 0."""
    theta, shear = np.deg2rad(theta), np.deg2rad(shear)
    rotation = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    shift = np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]])
    shearing = np.array([[1, -np.sin(shear), 0], [0, np.cos(shear), 0], [0, 0, 1]])
    zoom = np.array([[zx, 0, 0], [0, zy, 0], [0, 0, 1]])
    matrix = rotation @ shift @ shearing @ zoom
    h, w = image.shape[1:]
    o_x, o_y = h / 2 - 0.5, w / 2 - 0.5
    matrix = (
        np.array([[1, 0, o_x], [0, 1, o_y], [0, 0, 1]])
        @ matrix
        @ np.array([[1, 0, -o_x], [0, 1, -o_y], [0, 0, 1]])
    )
    return np.stack(
        [
            ndimage.affine_transform(c, matrix[:2, :2], matrix[:2, 2], order=1, mode=fill_mode, cval=cval)
            for c in image
        ]
    )


def one(**values) -> Transform:
    """A Transform of one image with these parameters (the rest the identity)."""
    base = dict(theta=0.0, tx=0.0, ty=0.0, shear=0.0, zx=1.0, zy=1.0)
    base.update(values)
    tensors = {k: torch.tensor([float(v)], dtype=torch.float64) for k, v in base.items()}
    return Transform(**tensors, horizontal_flip=torch.tensor([False]), vertical_flip=torch.tensor([False]))


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).random((3, 17, 24))  # odd and even sides, not square


CASES = {
    "rotation": dict(theta=33.0),
    "height shift": dict(tx=3.4),
    "width shift": dict(ty=-5.7),
    "shear": dict(shear=20.0),
    "zoom in x": dict(zx=0.8),
    "zoom out y": dict(zy=1.2),
    "composition": dict(theta=-17.0, tx=2.2, ty=-1.3, shear=11.0, zx=0.85, zy=1.15),
}


@pytest.mark.parametrize("fill_mode", augment.FILL_MODES)
@pytest.mark.parametrize("case", CASES)
def test_each_transform_and_their_composition_match_keras(image, case, fill_mode):
    expected = keras_oracle(image, **CASES[case], fill_mode=fill_mode, cval=0.25)
    got = augment.apply(
        torch.tensor(image[None], dtype=torch.float32), one(**CASES[case]), fill_mode, fill=0.25
    )
    # Every pixel, the fill modes' own included (the interior ones and the border ones alike).
    assert np.abs(got[0].double().numpy() - expected).max() < TOLERANCE
    assert np.abs(expected - image).max() > 0.1, "the case moves pixels: a no-op would fail"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # its scipy.ndimage.interpolation
@pytest.mark.parametrize("fill_mode", augment.FILL_MODES)
@pytest.mark.parametrize("case", CASES)
def test_each_transform_and_their_composition_match_keras_preprocessing(image, case, fill_mode):
    keras = pytest.importorskip("keras_preprocessing.image.affine_transformations")
    expected = keras.apply_affine_transform(
        image, **CASES[case], row_axis=1, col_axis=2, channel_axis=0, fill_mode=fill_mode, cval=0.25, order=1
    )
    moved = torch.tensor(image[None], dtype=torch.float32)
    got = augment.apply(moved, one(**CASES[case]), fill_mode, fill=0.25, centre_offset=0.5)
    assert np.abs(got[0].double().numpy() - expected).max() < TOLERANCE
    centred = augment.apply(moved, one(**CASES[case]), fill_mode, fill=0.25)  # tf.keras's centre
    assert ("shift" in case) == bool(np.abs(centred[0].double().numpy() - expected).max() < TOLERANCE)


def test_flips_follow_the_affine_part():
    images = torch.arange(2 * 1 * 3 * 4, dtype=torch.float32).view(2, 1, 3, 4)
    base = one()
    flips = base._replace(
        theta=base.theta.repeat(2),
        tx=base.tx.repeat(2),
        ty=base.ty.repeat(2),
        shear=base.shear.repeat(2),
        zx=base.zx.repeat(2),
        zy=base.zy.repeat(2),
        horizontal_flip=torch.tensor([True, False]),
        vertical_flip=torch.tensor([False, True]),
    )
    out = augment.apply(images, flips)
    assert torch.equal(out[0], images[0].flip(-1)) and torch.equal(out[1], images[1].flip(-2))


def test_draws_keras_ranges_and_same_seed_same_bits():
    keras = KerasAugment(
        rotation_range=40,
        width_shift_range=0.2,
        height_shift_range=3,
        shear_range=20,
        zoom_range=0.2,
        horizontal_flip=True,
        fill_mode="reflect",
    )
    drawn = keras.draw(4000, 50, 100, torch.Generator().manual_seed(0))
    assert drawn.theta.abs().max() <= 40 and drawn.theta.abs().max() > 39
    assert drawn.ty.abs().max() <= 20 and drawn.ty.abs().max() > 19, "a fraction of the width (100)"
    assert set(drawn.tx.tolist()) == {-2.0, -1.0, 0.0, 1.0, 2.0}, "an int range: pixels from range(3), signed"
    assert 0.8 <= drawn.zx.min() and drawn.zx.max() <= 1.2 and not torch.equal(drawn.zx, drawn.zy)
    assert 0.45 < drawn.horizontal_flip.double().mean() < 0.55 and not drawn.vertical_flip.any()
    images = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    one_run, again = (keras(images, torch.Generator().manual_seed(7)) for _ in range(2))
    other = keras(images, torch.Generator().manual_seed(8))
    assert torch.equal(one_run, again) and not torch.equal(one_run, other)


def test_config_pairs_round_trip_and_bad_arguments_are_named():
    keras = KerasAugment(shear_range=0.2 * 180 / 3.14159, zoom_range=0.2, horizontal_flip=True)
    assert KerasAugment.from_pairs(keras.pairs()) == keras
    assert [name for name, _ in keras.pairs()] == ["horizontal_flip", "shear_range", "zoom_range"]
    with pytest.raises(ValueError, match="unknown augmentation brightness_range"):
        KerasAugment.from_pairs((("brightness_range", 0.1),))
    with pytest.raises(ValueError, match="fill_mode"):
        KerasAugment(fill_mode="mirror")


def test_constant_fill_is_keras_cval_in_normalized_units():
    fill = augment.normalized_fill(0.0, (0.5, 0.25), (0.5, 0.25))
    assert fill.tolist() == [-1.0, -1.0]
    images = torch.zeros(1, 2, 6, 6)
    out = augment.apply(images, one(ty=10.0), "constant", fill)
    assert (out == -1).all(), "shifted fully out: every pixel is the fill"


def test_a_runs_augmentation_is_in_its_key_and_repeats_bit_for_bit(tmp_path):
    keras = KerasAugment(rotation_range=40, zoom_range=0.2, horizontal_flip=True, fill_mode="constant")
    small = dict(model="lenet5", dataset="mnist5k", batch_size=32, lr=0.05, train_subset=256, test_subset=64)
    plain, augmented = RunConfig(**small), RunConfig(**small, augment=keras.pairs())
    assert plain.key() != augmented.key() and plain.key() == RunConfig(**small, augment=()).key()
    assert RunConfig(**small, augment=[list(p) for p in reversed(keras.pairs())]).key() == augmented.key()
    data = load_dataset("mnist5k")
    one, two = (train_run(augmented, data, tmp_path / name) for name in "ab")
    assert one.weights_sha256 == two.weights_sha256
    assert train_run(plain, data, tmp_path / "c").weights_sha256 != one.weights_sha256
    with pytest.raises(ValueError, match="unknown augmentation"):
        RunConfig(**small, augment=(("channel_shift_range", 0.1),))


def test_same_seed_same_bits_on_each_device_under_deterministic_algorithms(device):
    """The runner's settings (deterministic algorithms on): grid_sample's forward runs on CUDA too,
    twice the same bits, and within float32 rounding of the CPU's."""
    keras = KerasAugment(
        rotation_range=30, shear_range=10, zoom_range=0.2, horizontal_flip=True, fill_mode="reflect"
    )
    images = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        one, again = (keras(images.to(device), torch.Generator().manual_seed(5)) for _ in range(2))
        on_cpu = keras(images, torch.Generator().manual_seed(5))
    finally:
        torch.use_deterministic_algorithms(before)
    assert torch.equal(one, again) and one.device.type == device
    torch.testing.assert_close(one.cpu(), on_cpu, atol=1e-5, rtol=0)
