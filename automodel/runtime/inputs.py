"""Raw inputs -> numbers: table cells encoded column by column, image files read as pixels,
and the rules that split delimited text into cells.

The search encodes its data with these functions (data.table, data.images) and reads table
files by the same delimiter and decimal rules (data.tablefile), and the exported script holds
them as they are, so both turn a raw row into the same numbers.
"""

from __future__ import annotations

import csv
import math
import re
import warnings
import zlib

import numpy as np

# Cells that count as missing, after stripping spaces.
MISSING = ("", "NA", "N/A", "NaN", "nan", "null", "NULL", "?")
# A column is (name, kind, *settings), with the settings of its kind in this order.
COLUMN_SETTINGS = {
    "numeric": ("fill", "indicator"),
    "onehot": ("levels",),
    "hash": ("buckets",),
}
IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
IMAGE_MODES = {"L": 1, "RGB": 3}  # the Pillow modes images are read in -> channels
# Delimited text: the delimiters detected, and numbers written with a decimal comma or point.
DELIMITERS = (",", ";", "\t", "|")
COMMA_NUMBER = re.compile(r"^[+-]?(\d+,\d*|,\d+)([eE][+-]?\d+)?$")
DOT_NUMBER = re.compile(r"^[+-]?(\d+\.\d*|\.\d+)([eE][+-]?\d+)?$")


def sniff_delimiter(sample: str, cut: bool = False) -> str:
    """The delimiter among DELIMITERS that splits the sample's first lines into equal rows of
    more than one cell; else the one the first line holds most of; else a comma. `cut`: the
    sample is the start of a longer text, so its last line may be partial."""
    lines = [line for line in sample.splitlines()[:20] if line.strip()]
    if cut and len(lines) > 1 and not sample.endswith(("\n", "\r")):
        lines = lines[:-1]
    try:
        return csv.Sniffer().sniff("\n".join(lines), "".join(DELIMITERS)).delimiter
    except csv.Error:
        header = lines[0] if lines else ""
        counts = {d: header.count(d) for d in DELIMITERS}
        best = max(counts, key=counts.get)
        return best if counts[best] else ","


def decimal_commas(cells, delimiter: str, decimal) -> bool:
    """Whether numbers in `cells` (stripped text, no header) are read with a decimal comma:
    `decimal` says so, or with `decimal` None, the text is not comma-delimited and writes
    numbers with commas and never with points."""
    if decimal is not None or delimiter == ",":
        return decimal == ","
    cells = list(cells)
    has_comma = any(COMMA_NUMBER.match(t) for t in cells)
    return has_comma and not any(DOT_NUMBER.match(t) for t in cells)


def point_decimal(text: str) -> str:
    """`3,5` -> `3.5`; any other text as it is."""
    return text.replace(",", ".") if COMMA_NUMBER.match(text) else text


def cell_text(value) -> str:
    """A typed cell (a Parquet file's) as the text a CSV file would hold: floats as Python
    writes them, a gap (None, NaN) empty; so that typed and text files encode alike."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return repr(value) if isinstance(value, float) else str(value).strip()


def column_width(column: tuple) -> int:
    """How many features a column (name, kind, *settings) is encoded into."""
    _, kind, *settings = column
    if kind == "numeric":
        return 1 + settings[1]
    if kind == "onehot":
        return len(settings[0])
    return settings[0]


def encode_cells(rows, columns) -> np.ndarray:
    """Rows of raw table cells, one per column and in the order of `columns` -> features.

    (name, "numeric", fill, indicator): the number, or `fill` when the cell is missing, then
    a 0/1 missing indicator when `indicator`; (name, "onehot", levels): a 0/1 feature per
    level, all 0 for a missing or unseen one; (name, "hash", buckets): a 0/1 feature per
    bucket, picked by the text's CRC-32. Float64, one row per row of cells.
    """
    rows = [list(row) for row in rows]
    for i, row in enumerate(rows):
        if len(row) != len(columns):
            names = [c[0] for c in columns]
            raise ValueError(f"row {i} has {len(row)} cells; expected one per {names}")
    out = np.zeros((len(rows), sum(map(column_width, columns))), dtype=np.float64)
    j = 0
    for k, column in enumerate(columns):
        name, kind, *settings = column
        texts = [str(row[k]).strip() for row in rows]
        if kind == "numeric":
            out[:, j] = [
                settings[0] if text in MISSING else _number(text, name, i)
                for i, text in enumerate(texts)
            ]
            if settings[1]:
                out[:, j + 1] = [text in MISSING for text in texts]
        elif kind == "onehot":
            index = {level: i for i, level in enumerate(settings[0])}
            _set_ones(out, j, [index.get(text, -1) for text in texts])
        else:
            buckets = [
                -1 if text in MISSING else zlib.crc32(text.encode()) % settings[0]
                for text in texts
            ]
            _set_ones(out, j, buckets)
        j += column_width(column)
    return out


def _set_ones(out: np.ndarray, start: int, positions: list[int]) -> None:
    """out[i, start + positions[i]] = 1 for every row i whose position is not -1."""
    positions = np.asarray(positions, dtype=np.int64)
    hit = np.flatnonzero(positions >= 0)
    out[hit, start + positions[hit]] = 1.0


def _number(text: str, column: str, row: int) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(
            f"column {column!r}, row {row}: {text!r} is not a finite number"
        )
    return value


def read_image(path, mode: str, size: tuple[int, int]) -> np.ndarray:
    """An image file -> its pixels, as `pixels` gives them. A file whose header claims more
    pixels than Pillow's limit (a decompression bomb: a small file that decodes to
    gigabytes) is a ValueError naming it, before anything is decoded."""
    image_module = _pillow()
    bomb = (image_module.DecompressionBombError, image_module.DecompressionBombWarning)
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its limit and twice it: refuse those files too.
            warnings.simplefilter("error", image_module.DecompressionBombWarning)
            with image_module.open(path) as image:
                return pixels(image, mode, size)
    except bomb as err:
        raise ValueError(f"{path} is too large to read safely: {err}") from None


def pixels(image, mode: str, size: tuple[int, int]) -> np.ndarray:
    """A Pillow image -> uint8 pixel values, channels first, flattened (C*H*W): converted
    to `mode` and resized (bilinear) to `size` (width, height) when it differs."""
    if image.mode != mode:
        image = image.convert(mode)
    if image.size != size:
        image = image.resize(size, _pillow().BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    return array.reshape(size[1], size[0], -1).transpose(2, 0, 1).reshape(-1)


def _pillow():
    """PIL.Image, imported on first use: only image files need Pillow."""
    try:
        from PIL import Image
    except ImportError:
        raise ValueError(
            "reading image files needs Pillow: pip install pillow"
        ) from None
    return Image
