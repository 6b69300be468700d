"""Image folders as datasets: both layouts, Pillow's decoding rules, the memory-mapped cache and
the one-line errors, on folders generated here (tiny images, a corrupt file, hidden files)."""

import io
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from cnnrepro.data import DatasetError, batches, check_dataset_name, dataset_label, folders, load_dataset
from cnnrepro.run import main

COLORS = {"cats": (200, 40, 40), "dogs": (40, 40, 200)}


def save(path, color=(0, 0, 0), size=(12, 8), mode="RGB", fmt=None, exif_orientation=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new(mode, size, color)
    kwargs = {}
    if exif_orientation:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        kwargs["exif"] = exif
    image.save(path, format=fmt, **kwargs)


def make_folder(root, layout="flat", per_class=5, extras=True):
    """Two classes of solid-colour images; with ``extras`` a corrupt JPEG, .DS_Store and a .txt."""
    splits = {"train": per_class, "validation": 2} if layout == "split" else {"": per_class}
    for split, n in splits.items():
        for name, color in COLORS.items():
            for i in range(n):
                save(root / split / name / f"{i:03d}.png", color)
    if extras:
        base = root / ("train" if layout == "split" else "")
        (base / "cats" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
        (base / "cats" / ".DS_Store").write_bytes(b"\0\1")
        (base / "dogs" / "notes.txt").write_text("not an image")
        (base / "dogs" / "Thumbs.db").write_bytes(b"\0")
    return root


@pytest.mark.parametrize("layout", ["flat", "split"])
def test_both_layouts_classes_splits_and_the_skipped_file(tmp_path, layout, capsys):
    root = make_folder(tmp_path / "pets", layout)
    data = load_dataset(f"folder:{root}", tmp_path / "data", size=16)
    assert data.notes["classes"] == ["cats", "dogs"] and data.num_classes == 2
    assert data.notes["skipped"] == 1 and data.notes["skipped_files"][0].endswith("broken.jpg")
    assert "broken.jpg" in capsys.readouterr().err
    train, test = (5 - 1, 1) if layout == "flat" else (5, 2)  # flat: int(0.2 * 5) = 1 of each class tests
    assert len(data.train) == 2 * train and len(data.test) == 2 * test
    assert data.train.labels.tolist()[:4] == [0, 1, 0, 1], "round-robin over the classes"
    assert data.train.images.dtype == torch.uint8 and data.train.images.shape[1:] == (3, 16, 16)
    raw = data.train.images[0].float()
    assert raw[:, 0, 0].tolist() == list(map(float, COLORS["cats"])), "stretched, colour kept"
    images, labels = next(batches(data.train, 4, torch.Generator().manual_seed(0)))
    assert images.dtype == torch.float32 and images.shape == (4, 3, 16, 16)
    cats = data.train.rows(torch.tensor([0]))
    expected = (torch.tensor(COLORS["cats"]) / 255 - torch.tensor(data.mean)) / torch.tensor(data.std)
    torch.testing.assert_close(cats[0, :, 3, 3], expected)
    smaller = data.resized(8).train  # a raw split resized becomes float, normalized, in memory
    assert smaller.images.dtype == torch.float32 and smaller.mean is None
    torch.testing.assert_close(smaller.images[0, :, 4, 4], expected)


def test_flat_split_takes_the_first_fifth_of_each_class_by_name(tmp_path):
    root = tmp_path / "f"
    for name in COLORS:
        for i in range(10):
            save(root / name / f"{i:02d}.png", (i * 20, 0, 0))
    data = load_dataset(f"folder:{root}", tmp_path / "data", size=4)
    assert sorted(data.test.images[:, 0, 0, 0].tolist()) == [0, 0, 20, 20]  # 00 and 01 of each class
    assert sorted(set(data.train.images[:, 0, 0, 0].tolist())) == [i * 20 for i in range(2, 10)]


def test_gray_exif_gif_and_webp(tmp_path):
    root = tmp_path / "g"
    save(root / "a" / "0.png", 30, mode="L")
    save(root / "a" / "1.gif", 60, mode="L", fmt="GIF")
    save(root / "b" / "0.bmp", 90, mode="L")
    save(root / "b" / "1.webp", 120, mode="L", fmt="WEBP")
    for i in range(2, 6):
        save(root / "a" / f"{i}.png", 30, mode="L")
        save(root / "b" / f"{i}.png", 90, mode="L")
    data = load_dataset(f"folder:{root}", tmp_path / "data", size=6)
    assert data.in_channels == 1, "every image grayscale: one channel"
    assert data.notes["skipped"] == 0
    # EXIF orientation 6 (rotate 90 degrees): a 12x8 image with a marked left column becomes upright
    image = Image.new("RGB", (12, 8), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 1, 8))
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(buffer, format="PNG", exif=exif)
    path = tmp_path / "rotated.png"
    path.write_bytes(buffer.getvalue())
    upright = folders.decode(path, 12)
    assert upright[0, 0, :].mean() > 200 and upright[0, -1, :].mean() < 50, "left column now the top row"


def test_the_second_load_reads_the_cache_and_a_changed_folder_is_decoded_again(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "pets", extras=False)
    first = load_dataset(f"folder:{root}", tmp_path / "data", size=8)

    def no_decoding(*args):
        raise AssertionError("decoded again")

    with monkeypatch.context() as patch:
        patch.setattr(folders, "decode", no_decoding)
        again = load_dataset(f"folder:{root}", tmp_path / "data", size=8)
    assert again.notes["content_sha256"] == first.notes["content_sha256"]
    assert torch.equal(again.train.images, first.train.images)
    save(root / "dogs" / "999.png", (0, 255, 0))
    changed = load_dataset(f"folder:{root}", tmp_path / "data", size=8)
    assert changed.notes["content_sha256"] != first.notes["content_sha256"]
    assert len(changed.train) == len(first.train) + 1


def test_opening_a_cache_of_a_gigabyte_maps_it_and_reads_only_the_rows_batches_take(tmp_path):
    root = make_folder(tmp_path / "pets", extras=False)
    cache = Path(load_dataset(f"folder:{root}", tmp_path / "data", size=150).notes["cache"])
    rows = (1 << 30) // (3 * 150 * 150)  # the folder's cache, swapped for a sparse gigabyte of as many rows
    with open(cache / "images.u8", "wb") as f:
        f.truncate(rows * 3 * 150 * 150)
    meta = json.loads((cache / "meta.json").read_text())
    meta["labels"] = {"train": [i % 2 for i in range(rows - 100)], "test": [i % 2 for i in range(100)]}
    (cache / "meta.json").write_text(json.dumps(meta))

    def resident() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    before = resident()
    data = load_dataset(f"folder:{root}", tmp_path / "data", size=150)
    opened = resident() - before
    images, _ = next(batches(data.train, 16, torch.Generator().manual_seed(0)))
    assert len(data.train) == rows - 100 and images.shape == (16, 3, 150, 150)
    assert opened < 64 << 20 and resident() - before < 128 << 20, "far below the gigabyte"


@pytest.mark.parametrize(
    "arrange, message",
    [
        (lambda r: None, "does not exist"),
        (lambda r: save(r / "only" / "0.png"), "1 class folder"),
        (lambda r: (save(r / "a" / "0.png"), (r / "b").mkdir()), "class folder b holds no images"),
        (lambda r: [save(r / "train" / c / "0.png") for c in "ab"], "no test split"),
        (lambda r: [save(r / c / "0.png") for c in "ab"], "too few images for a test split"),
    ],
)
def test_bad_folders_are_one_line_and_exit_2_before_anything_is_written(tmp_path, capsys, arrange, message):
    root = tmp_path / "imgs"
    arrange(root)
    with pytest.raises(DatasetError, match=message):
        load_dataset(f"folder:{root}", tmp_path / "data", size=8)
    out = tmp_path / "out"
    argv = ["--profile", "smoke", "--models", "lenet5", "--dataset", f"folder:{root}", "--out", str(out)]
    assert main([*argv, "--data-dir", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists() and not (tmp_path / "data").exists()


@pytest.mark.parametrize("layout", ["flat", "split"])
def test_a_smoke_run_on_a_folder_records_the_dataset_and_reruns_from_the_cache(tmp_path, monkeypatch, layout):
    root = make_folder(tmp_path / "pets", layout, per_class=6)
    out, data = tmp_path / "out", tmp_path / "data"
    argv = ["--profile", "smoke", "--models", "lenet5", "--dataset", f"folder:{root}", "--out", str(out)]
    assert main([*argv, "--data-dir", str(data), "--no-report"]) == 0
    env = json.loads((out / "env.json").read_text())
    assert env["dataset"]["skipped"] == 1 and env["dataset"]["classes"] == ["cats", "dogs"]
    assert len(env["dataset"]["content_sha256"]) == 64
    monkeypatch.setattr(folders, "decode", lambda *a: pytest.fail("decoded again"))
    assert main([*argv, "--data-dir", str(data), "--no-report", "--force"]) == 0
    assert json.loads((out / "env.json").read_text())["dataset"] == env["dataset"]


def test_a_bad_dataset_name_names_the_choices():
    with pytest.raises(ValueError, match="folder:PATH"):
        load_dataset("imagenet")


def test_a_cache_another_process_made_first_is_used_and_no_temp_is_left(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "pets", extras=False)
    write_cache = folders.write_cache

    def racing(layout, size, temp, *mode):  # another rank renames its cache into place meanwhile
        meta = write_cache(layout, size, temp, *mode)
        shutil.copytree(temp, temp.parent / temp.name.split(".")[1])
        return meta

    monkeypatch.setattr(folders, "write_cache", racing)
    data = load_dataset(f"folder:{root}", tmp_path / "data", size=8)
    cache = Path(data.notes["cache"])
    assert len(data.train) == 8 and [p.name for p in cache.parent.iterdir()] == [cache.name]


def test_mode_asks_for_rgb_or_gray_whatever_the_content_and_keys_its_own_cache(tmp_path):
    gray_root, colour_root = tmp_path / "gray", make_folder(tmp_path / "colour", extras=False)
    for name, value in (("a", 30), ("b", 90)):
        for i in range(5):
            save(gray_root / name / f"{i}.png", value, mode="L")
    data = tmp_path / "data"
    auto = load_dataset(f"folder:{gray_root}", data, size=6)
    rgb = load_dataset(f"folder:{gray_root}?mode=rgb", data, size=6)
    assert (auto.in_channels, rgb.in_channels) == (1, 3) and rgb.name.endswith("?mode=rgb")
    assert rgb.train.images[0, :, 0, 0].tolist() == [auto.train.images[0, 0, 0, 0].item()] * 3
    assert "as asked (?mode=rgb)" in rgb.notes["color"] and "by content" in auto.notes["color"]
    assert rgb.notes["cache"] != auto.notes["cache"], "the mode is part of the cache's key"
    gray = load_dataset(f"folder:{colour_root}?mode=gray", data, size=6)
    assert gray.in_channels == 1 and load_dataset(f"folder:{colour_root}", data, size=6).in_channels == 3
    red, green, blue = COLORS["cats"]
    luma = (red * 299 + green * 587 + blue * 114) // 1000  # Pillow's L: ITU-R 601-2
    assert abs(gray.train.images[0, 0, 0, 0].item() - luma) <= 1
    layout = folders.read_layout(gray_root.resolve())
    assert (
        folders.cache_key(layout, 6)
        == folders.cache_key(layout, 6, "auto")
        != folders.cache_key(layout, 6, "rgb")
    ), "auto's keys are those from before there was a mode: older caches stay valid"


def test_a_folder_names_options_and_paths_with_question_marks():
    assert folders.FolderName.parse("folder:/x/pets?mode=gray") == folders.FolderName(Path("/x/pets"), "gray")
    assert folders.FolderName.parse("folder:/x/what?") == folders.FolderName(Path("/x/what?"))
    assert dataset_label("folder:/x/pets?mode=rgb") == "folder-pets-rgb"
    assert dataset_label("folder:/x/pets?mode=auto") == dataset_label("folder:/x/pets") == "folder-pets"
    for bad in ("folder:/x?mode=cmyk", "folder:/x?colour=rgb", "folder:?mode=rgb", "folder:"):
        with pytest.raises(ValueError, match=r"mode=auto\|rgb\|gray|not folder:PATH"):
            check_dataset_name(bad)


def test_a_run_with_a_mode_records_it_in_its_key_and_a_bad_mode_exits_2(tmp_path, capsys):
    root = make_folder(tmp_path / "pets", per_class=6, extras=False)
    out, data = tmp_path / "out", tmp_path / "data"
    argv = ["--profile", "smoke", "--models", "lenet5", "--out", str(out), "--data-dir", str(data)]
    assert main([*argv, "--dataset", f"folder:{root}?mode=gray", "--no-report"]) == 0
    env = json.loads((out / "env.json").read_text())
    assert env["dataset"]["name"].endswith("?mode=gray") and "?mode=gray" in env["dataset"]["color"]
    (recorded,) = pd.read_csv(out / "runs.csv")["config"]
    assert json.loads(recorded)["dataset"] == f"folder:{root}?mode=gray"
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--dataset", f"folder:{root}?mode=cmyk"])
    assert exited.value.code == 2 and "cmyk" in capsys.readouterr().err
