"""`data=image_folder` and `data=torchvision`: held as tensors or read by a DataLoader,
augmented on the device, exported to read image files. Never downloads: the images are
written to temporary folders (MNIST's own file format included) or are torchvision's FakeData.
"""

from __future__ import annotations

import json
import runpy
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import automodel.data
from automodel import models, train
from automodel.config import DataConfig
from automodel.runtime.inputs import read_image
from tests.conftest import FAST, cli, tree
from tests.test_export import _script, blocker  # noqa: F401 (a fixture)

BASE = [o for o in FAST if not o.startswith(("data=", "data.n_"))]
SPACE = """family: resnet
params:
  stages: 2
  width: 8
  augment: {augment}
  batch_size: 8
  lr: 0.003
"""


def image_folder(root: Path, n: int = 16, size: int = 12, mode: str = "RGB") -> Path:
    """Two classes that differ in brightness, `n` images each."""
    rng = np.random.default_rng(0)
    for label, base in (("bright", 170), ("dark", 80)):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            shape = (size, size, 3) if mode == "RGB" else (size, size)
            pixels = np.clip(rng.normal(base, 40, shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).convert(mode).save(root / label / f"{i}.png")
    return root


def bomb(path: Path, side: int = 20000) -> Path:
    """A PNG of a few bytes whose header says side x side pixels: a decompression bomb (its
    data, never read, is empty). 20000: past twice Pillow's limit (an error); 10000: past
    the limit only (Pillow warns, and would decode 300 MB)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)  # 8-bit RGB
    png = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png)
    return path


def space(tmp: Path, augment: str = "crop_flip") -> Path:
    path = tmp / "tiny.yaml"
    path.write_text(SPACE.format(augment=augment))
    return path


def _cfg(path: Path, **kw) -> DataConfig:
    return DataConfig(**{"name": path.name, "source": "image_folder", "path": str(path), **kw})


# ------------------------------------------------------------------------- loading


def test_a_folder_per_class_becomes_pixel_rows(tmp_path):
    raw = automodel.data.images.load_folder(_cfg(image_folder(tmp_path / "img", n=5, size=6)))
    assert raw.classes == ["bright", "dark"] and raw.image_mode == "RGB"
    assert raw.input_shape == (3, 6, 6) and raw.x.shape == (10, 108)
    assert raw.x.min() >= 0 and raw.x.max() <= 255 and raw.reader is None


def test_image_size_resizes_and_grey_images_keep_one_channel(tmp_path):
    folder = image_folder(tmp_path / "img", n=5, size=10, mode="L")
    Image.new("L", (7, 5)).save(folder / "dark" / "odd.png")
    raw = automodel.data.images.load_folder(_cfg(folder, image_size=8))
    assert raw.input_shape == (1, 8, 8) and raw.x.shape == (11, 64)


def test_large_data_is_read_by_a_loader_with_the_same_batches(tmp_path):
    folder = image_folder(tmp_path / "img", n=12, size=8)
    held = automodel.data.load(_cfg(folder), seed=0)
    read = automodel.data.load(_cfg(folder, in_memory_mb=0, loader_workers=1), seed=0)
    assert not held.lazy and read.lazy
    assert len(read.x_train) == len(held.x_train)
    rows = torch.stack([read.x_train[i] for i in range(len(read.x_train))])
    assert torch.allclose(rows, held.x_train, atol=1e-4)  # streamed vs numpy statistics
    assert torch.equal(read.y_train, held.y_train)
    results = []
    for data in (held, read):
        train.seed_everything(0)
        model = models.create("resnet", {"stages": 1, "width": 4}, data.spec)
        recipe = train.Recipe(batch_size=8, epochs=2, augment="crop_flip", lr=0.01)
        results.append(train.fit(model, data, recipe, eval_batch_size=5))
    assert results[0].history[-1].train_loss == pytest.approx(
        results[1].history[-1].train_loss, rel=1e-3
    )


def test_torchvision_mnist_from_its_own_files(tmp_path):
    _fake_mnist(tmp_path / "root", n_train=60, n_test=20)
    cfg = DataConfig(name="MNIST", source="torchvision", root=str(tmp_path / "root"))
    data = automodel.data.load(cfg, seed=0)
    assert data.spec.input_shape == (1, 28, 28) and data.spec.image_mode == "L"
    assert data.spec.classes[:2] == ("0 - zero", "1 - one") and len(data.x_test) == 20
    small = automodel.data.load(DataConfig(**{**cfg.__dict__, "image_size": 14}), seed=0)
    assert small.spec.input_shape == (1, 14, 14)
    lazy = automodel.data.load(DataConfig(**{**cfg.__dict__, "in_memory_mb": 0}), seed=0)
    assert lazy.lazy and lazy.x_test[0].shape == (1, 28, 28)


def _fake_mnist(root: Path, n_train: int, n_test: int) -> None:
    """MNIST's raw idx files (what torchvision reads), with a bar whose height is the digit."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        y = np.arange(n, dtype=np.uint8) % 10
        rng.shuffle(y)
        x = np.zeros((n, 28, 28), np.uint8)
        for i, label in enumerate(y):
            x[i, 2 * label : 2 * label + 6, 4:24] = 200
        header = struct.pack(">IIII", 0x803, n, 28, 28)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(header + x.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
            struct.pack(">II", 0x801, n) + y.tobytes()
        )


# --------------------------------------------------------------------- augmentation


def test_augmentation_crops_and_flips_per_sample_and_the_script_does_the_same(tmp_path):
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    flipped = train.augment(x, "flip", torch.Generator().manual_seed(1))
    assert all(
        torch.equal(f, s) or torch.equal(f, s.flip(2)) for f, s in zip(flipped, x, strict=True)
    )
    cropped = train.augment(x, "crop", torch.Generator().manual_seed(1))
    assert cropped.shape == x.shape and not torch.equal(cropped, x)
    from automodel.export import verbatim

    scope: dict = {"torch": torch, "nn": torch.nn}
    start = verbatim.RUNTIME.index("def augment(")
    exec(verbatim.RUNTIME[start : verbatim.RUNTIME.index("\n\n\n", start)], scope)
    ours = train.augment(x, "crop_flip", torch.Generator().manual_seed(3))
    theirs = scope["augment"](x, "crop_flip", torch.Generator().manual_seed(3))
    assert torch.equal(ours, theirs)


# ---------------------------------------------------------------------- end to end


@pytest.mark.parametrize("in_memory_mb", [1024, 0])
def test_search_on_an_image_folder_and_the_export_reads_image_files(
    tmp_path,
    blocker,  # noqa: F811
    in_memory_mb,
):
    folder = image_folder(tmp_path / "photos", n=16, size=8)
    runs = tmp_path / "runs"
    res = cli("search", *BASE, "data=image_folder", f"data.path={folder}",
              f"data.in_memory_mb={in_memory_mb}", "data.loader_workers=1",
              f"search_space={space(tmp_path)}", f"runs_dir={runs}", "study.n_trials=2",
              "trainer.max_epochs=2")  # fmt: skip
    assert res.returncode == 0, res.stderr
    study_dir = runs / "photos-tiny"
    summary = json.loads((study_dir / "summary.json").read_text())
    export_dir = study_dir / "export"
    cfg = _cfg(folder, in_memory_mb=in_memory_mb)
    splits = automodel.data.load_raw_splits(cfg, seed=0)
    # The test split as image files in a folder per class: labels come from the folders.
    test = tmp_path / "test"
    for x, y in zip(splits["x_test"], splits["y_test"], strict=True):
        (test / ["bright", "dark"][y]).mkdir(parents=True, exist_ok=True)
        if in_memory_mb:  # rows of pixels: write them back as images
            pixels = np.asarray(x, np.uint8).reshape(3, 8, 8).transpose(1, 2, 0)
            Image.fromarray(pixels).save(
                test / ["bright", "dark"][y] / f"{len(list(test.rglob('*')))}.png"
            )
        else:  # file paths
            shutil.copy(x, test / ["bright", "dark"][y] / f"{Path(x).parent.name}-{Path(x).name}")
    res = _script(export_dir, blocker, "evaluate", "--input", test)
    assert res.returncode == 0, res.stderr
    printed = {k: float(v) for k, v in map(str.split, res.stdout.splitlines())}
    assert printed == summary["test"]
    res = _script(export_dir, blocker, "predict", "--input", folder / "dark" / "3.png")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0] == "input,label,bright,dark"
    source = (export_dir / "best_model.py").read_text()
    assert 'IMAGE_MODE = "RGB"' in source and 'AUGMENT = "crop_flip"' in source
    # Explained at the search's end (read batch by batch too), and per image by the script.
    assert json.loads((study_dir / "importance.json").read_text())["rows"] == len(splits["y_test"])
    res = _script(export_dir, blocker, "explain", "--input", folder / "dark" / "3.png",
                  "--row", "0", "--output", tmp_path / "map.npy")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert np.load(tmp_path / "map.npy").shape == (3, 8, 8)
    with Image.open(tmp_path / "map.png") as picture:
        assert picture.size == (256, 256)
    res = _script(export_dir, blocker, "predict", "--input", bomb(tmp_path / "bomb.png"))
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.startswith(f"error: {tmp_path / 'bomb.png'} is too large to read safely")
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


@pytest.mark.parametrize("side", [10000, 20000])
def test_a_decompression_bomb_is_refused_before_it_is_decoded(tmp_path, side):
    path = bomb(tmp_path / "bomb.png", side)
    with pytest.raises(ValueError, match=f"^{path} is too large to read safely: Image size"):
        read_image(path, "RGB", (8, 8))


def test_the_image_export_retrains_with_augmentation(tmp_path, blocker):  # noqa: F811
    folder = image_folder(tmp_path / "photos", n=16, size=8)
    runs = tmp_path / "runs"
    res = cli("search", *BASE, "data=image_folder", f"data.path={folder}",
              f"search_space={space(tmp_path)}", f"runs_dir={runs}", "study.n_trials=1",
              "trainer.max_epochs=2")  # fmt: skip
    assert res.returncode == 0, res.stderr
    study_dir = runs / "photos-tiny"
    splits = automodel.data.load_raw_splits(_cfg(folder), seed=0)
    files = {}
    for key, array in splits.items():
        files[key] = tmp_path / f"{key}.npy"
        np.save(files[key], array)
    res = _script(study_dir / "export", blocker, "train", "--input", files["x_train"],
                  "--labels", files["y_train"], "--val-input", files["x_val"], "--val-labels",
                  files["y_val"], "--output", tmp_path / "r.pt")  # fmt: skip
    assert res.returncode == 0, res.stderr
    best = float(res.stdout.split("best val_accuracy")[1].split()[0])
    summary = json.loads((study_dir / "summary.json").read_text())
    assert abs(best - summary["val"]["accuracy"]) <= 0.01
    script = runpy.run_path(str(study_dir / "export" / "best_model.py"))
    assert script["read_images"]([folder / "dark" / "0.png"]).shape == (1, 192)


def test_torchvision_fake_data_search(tmp_path):
    runs = tmp_path / "runs"
    res = cli("search", *BASE, "data=torchvision", "data.name=FakeData", "data.image_size=8",
              f"search_space={space(tmp_path, 'none')}", f"runs_dir={runs}",
              "study.n_trials=1", "trainer.max_epochs=1")  # fmt: skip
    assert res.returncode == 0, res.stderr
    summary = json.loads((runs / "FakeData-tiny" / "summary.json").read_text())
    assert set(summary["test"]) == {"accuracy", "f1_macro"}


# ------------------------------------------------------------------------ bad input


def _bad(tmp: Path, case: str) -> tuple[list[str], str]:
    folder = tmp / "img"
    if case == "missing folder":
        return [f"data.path={tmp / 'nope'}"], "does not exist"
    if case == "a file":
        (tmp / "f.png").write_bytes(b"x")
        return [f"data.path={tmp / 'f.png'}"], "is a file, not a folder"
    if case == "no class folders":
        folder.mkdir()
        Image.new("RGB", (4, 4)).save(folder / "a.png")
        return [f"data.path={folder}"], "has no class folders with images (1 images lie"
    image_folder(folder, n=5, size=6)
    if case == "mixed modes":
        Image.new("L", (6, 6)).save(folder / "dark" / "grey.png")
        return [f"data.path={folder}"], "images of mixed modes in"
    if case == "mixed sizes":
        Image.new("RGB", (7, 6)).save(folder / "dark" / "wide.png")
        return [f"data.path={folder}"], "is 6x6, dark/wide.png is 7x6; set data.image_size=N"
    if case == "unreadable":
        (folder / "dark" / "broken.png").write_bytes(b"not an image")
        return [f"data.path={folder}"], "dark/broken.png in"
    if case == "decompression bomb":
        bomb(folder / "dark" / "bomb.png")
        return [f"data.path={folder}"], "dark/bomb.png in"
    if case == "single class":
        shutil.rmtree(folder / "dark")
        return [f"data.path={folder}"], "has a single class ('bright')"
    if case == "too few per class":
        for p in sorted((folder / "dark").iterdir())[2:]:
            p.unlink()
        return [f"data.path={folder}"], "class 'dark' has 2 rows"
    if case == "torchvision missing":
        return [
            "data=torchvision",
            "data.name=CIFAR10",
            f"data.root={tmp}",
        ], "is not under data.root"
    if case == "torchvision unknown":
        return [
            "data=torchvision",
            "data.name=ImageNet",
        ], "data.name 'ImageNet' is not a torchvision"
    raise AssertionError(case)


BAD = [
    "missing folder",
    "a file",
    "no class folders",
    "mixed modes",
    "mixed sizes",
    "unreadable",
    "decompression bomb",
    "single class",
    "too few per class",
    "torchvision missing",
    "torchvision unknown",
]


@pytest.mark.parametrize("case", BAD)
def test_bad_image_input_is_one_line_exit_2_nothing_written(tmp_path, case):
    overrides, fragment = _bad(tmp_path, case)
    runs = tmp_path / "runs"
    source = [] if overrides[0].startswith("data=") else ["data=image_folder"]
    res = cli("search", *BASE, *source, *overrides, f"runs_dir={runs}")
    assert res.returncode == 2, (res.stdout, res.stderr)
    err = res.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert fragment in err, err
    assert "Traceback" not in res.stderr and tree(runs) == []


def test_mixed_sizes_are_fine_with_an_image_size(tmp_path):
    folder = image_folder(tmp_path / "img", n=5, size=6)
    Image.new("RGB", (7, 6)).save(folder / "dark" / "wide.png")
    raw = automodel.data.images.load_folder(_cfg(folder, image_size=6))
    assert raw.x.shape == (11, 108)
