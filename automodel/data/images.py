"""Images: a folder of the user's (a folder per class) or a torchvision dataset.

Raw rows are pixel values (0-255), channels first, flattened, as runtime.inputs reads them
(and so the exported script, which holds that code, reads image files the same way). Data that
fits in `data.in_memory_mb` (as float32) is read whole; larger data is read batch by batch by
a DataLoader (data.lazy): then `Raw.x` holds file paths or row numbers, and `Raw.reader`
turns one into its pixels.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from automodel.data.source import Raw
from automodel.errors import first_line
from automodel.runtime.inputs import IMAGE_MODES, IMAGE_SUFFIXES, pixels, read_image

# Pillow modes read as grey (L) or colour (RGB); any other mode is read as RGB.
MODES = {"1": "L", "L": "L", "LA": "L", "I": "L", "I;16": "L", "F": "L"}
TORCHVISION = {  # name -> mode of its images
    "MNIST": "L",
    "FashionMNIST": "L",
    "CIFAR10": "RGB",
    "CIFAR100": "RGB",
    "FakeData": "RGB",
}
FAKE_SIZES = (200, 50)  # FakeData (for tests and smoke runs): train and test images


class FileReader:
    """Picklable for DataLoader workers: a file path -> its pixels."""

    def __init__(self, mode: str, size: tuple[int, int]):
        self.mode, self.size = mode, size

    def __call__(self, path: str) -> np.ndarray:
        return read_image(path, self.mode, self.size)


class ArrayReader:
    """Picklable for DataLoader workers: a row number -> the pixels of that image."""

    def __init__(self, images: np.ndarray, mode: str, size: tuple[int, int]):
        self.images, self.mode, self.size = images, mode, size

    def __call__(self, i: int) -> np.ndarray:
        from PIL import Image

        return pixels(Image.fromarray(self.images[i]), self.mode, self.size)


def _fits(cfg, n: int, shape: tuple[int, ...]) -> bool:
    return n * math.prod(shape) * 4 <= cfg.in_memory_mb * 2**20


# ------------------------------------------------------------------------- image folder


def load_folder(cfg) -> Raw:
    """`data.path`/<class>/<image files>; raises ValueError naming the problem."""
    root = Path(cfg.path)
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise ValueError(f"data.path {str(root)!r} {what}")
    files, labels, classes = _class_files(root)
    mode, size = _check_images(root, files, cfg.image_size)
    shape = (IMAGE_MODES[mode], size[1], size[0])
    reader = FileReader(mode, size)
    y = np.asarray(labels, np.int64)
    raw = Raw(x=None, y=y, input_shape=shape, classes=classes, image_mode=mode)
    if _fits(cfg, len(files), shape):
        raw.x = np.stack([reader(str(f)) for f in files]).astype(np.float32)
    else:
        raw.x, raw.reader = np.array([str(f) for f in files], dtype=object), reader
    return raw


def _class_files(root: Path) -> tuple[list[Path], list[int], list[str]]:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    classes, files, labels = [], [], []
    for folder in folders:
        found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if found:
            labels += [len(classes)] * len(found)
            classes.append(folder.name)
            files += found
    if not classes:
        loose = [p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
        hint = f" ({len(loose)} images lie directly in it)" if loose else ""
        raise ValueError(
            f"data.path {str(root)!r} has no class folders with images{hint}; put each "
            "class's images in a subfolder named after the class"
        )
    return files, labels, classes


def _check_images(root: Path, files: list[Path], image_size: int | None):
    """(mode, (width, height)) shared by every image; mixed modes, or mixed sizes without
    data.image_size, are errors naming two files that differ."""
    from PIL import Image, UnidentifiedImageError

    first = None
    for path in files:
        name = path.relative_to(root)
        try:
            with warnings.catch_warnings():  # a decompression bomb: as runtime.read_image
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as image:
                    mode, size = image.mode, image.size
        except (UnidentifiedImageError, OSError):
            raise ValueError(f"{name} in {root} is not a readable image") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise ValueError(f"{name} in {root} is too large to read safely: {err}") from None
        if first is None:
            first = name, mode, size
        elif MODES.get(mode, "RGB") != MODES.get(first[1], "RGB"):
            raise ValueError(
                f"images of mixed modes in {root}: {first[0]} is {first[1]}, {name} is "
                f"{mode}; convert them to one mode (all grey or all colour)"
            )
        elif size != first[2] and image_size is None:
            raise ValueError(
                f"images of mixed sizes in {root}: {first[0]} is {_wxh(first[2])}, {name} is "
                f"{_wxh(size)}; set data.image_size=N to resize them all to N x N"
            )
    return MODES.get(first[1], "RGB"), (image_size, image_size) if image_size else first[2]


def _wxh(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


# -------------------------------------------------------------------------- torchvision


def load_torchvision(cfg) -> Raw:
    """torchvision.datasets.<data.name> from data.root: its own train and test splits."""
    mode = TORCHVISION[cfg.name]
    train, test = _torchvision_sets(cfg)
    x_train, y_train, classes = _arrays(train)
    x_test, y_test, _ = _arrays(test)
    height, width = x_train.shape[1:3]
    size = (cfg.image_size, cfg.image_size) if cfg.image_size else (width, height)
    shape = (IMAGE_MODES[mode], size[1], size[0])
    reader = ArrayReader(np.concatenate([x_train, x_test]), mode, size)
    raw = Raw(x=None, y=y_train, input_shape=shape, classes=classes, image_mode=mode)
    raw.y_test = y_test
    n = len(x_train) + len(x_test)
    if not _fits(cfg, n, shape):
        raw.reader = reader
        raw.x, raw.x_test = np.arange(len(x_train)), np.arange(len(x_train), n)
    elif size == (width, height) and x_train.ndim == 3 + (mode == "RGB"):  # as stored
        raw.x, raw.x_test = (_flat(a) for a in (x_train, x_test))
    else:
        rows = np.stack([reader(i) for i in range(n)]).astype(np.float32)
        raw.x, raw.x_test = rows[: len(x_train)], rows[len(x_train) :]
    return raw


def _flat(images: np.ndarray) -> np.ndarray:
    """(N, H, W) or (N, H, W, C) uint8 -> (N, C*H*W) float32, channels first."""
    if images.ndim == 3:
        images = images[..., None]
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1).astype(np.float32)


def _torchvision_sets(cfg):
    import torchvision

    dataset = getattr(torchvision.datasets, cfg.name)
    if cfg.name == "FakeData":  # random images: for tests and smoke runs, never downloaded
        side = cfg.image_size or 32
        return tuple(
            dataset(size=n, image_size=(3, side, side), num_classes=4, random_offset=i * n)
            for i, n in enumerate(FAKE_SIZES)
        )
    try:
        return (
            dataset(cfg.root, train=True, download=cfg.download),
            dataset(cfg.root, train=False, download=cfg.download),
        )
    except RuntimeError as err:
        if cfg.download:
            raise ValueError(f"torchvision {cfg.name}: {first_line(err)}") from None
        raise ValueError(
            f"torchvision {cfg.name} is not under data.root {cfg.root!r}; point data.root at "
            "the folder that holds it, or set data.download=true to download it there"
        ) from None
    except OSError as err:  # no network, a folder that cannot be written
        raise ValueError(f"torchvision {cfg.name}: cannot download it: {err}") from None


def _arrays(dataset) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(uint8 images (N, H, W[, C]), labels, class names) of a torchvision dataset."""
    if hasattr(dataset, "data"):
        images = np.asarray(dataset.data, dtype=np.uint8)
        labels = np.asarray(dataset.targets, dtype=np.int64)
        return images, labels, [str(c) for c in dataset.classes]
    pairs = [dataset[i] for i in range(len(dataset))]  # FakeData: PIL images
    images = np.stack([np.asarray(image, dtype=np.uint8) for image, _ in pairs])
    labels = np.asarray([int(label) for _, label in pairs], dtype=np.int64)
    return images, labels, [str(c) for c in range(dataset.num_classes)]
