"""Readers of labelled-CSV data sets: Kaggle's ``styles.csv`` + ``images/``, and ``path,label``.

Two layouts, both turned into :class:`TableRows` (one candidate image per usable row, plus
every row that could not be used, with its reason):

- **Kaggle "Fashion Product Images"**: ``<data>/styles.csv`` with the header
  ``id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,
  productDisplayName`` beside ``<data>/images/<id>.jpg``. The file is not quoted, and some
  product names contain commas, so such a line has more fields than the header: the extra fields
  belong to the last column and are joined back with commas (the row is kept and listed in
  ``repaired``). Each line is parsed on its own, so a stray quote cannot swallow the lines after
  it.
- **Generic labelled CSV** (``--labels-csv F``): a header with the columns ``path`` and
  ``label`` (others ignored), standard CSV quoting; paths relative to the CSV's folder (absolute
  paths are kept as they are).

Reasons a row is skipped (:data:`SKIP_REASONS`): ``malformed_row`` (fewer fields than the
header, or an empty id/path), ``empty_label``, ``duplicate`` (an id or image already listed by
an earlier row), ``no_image`` (the image file does not exist). Labels are stripped of
surrounding whitespace. Nothing here decodes an image (see :mod:`training.manifest`).
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from contract import IMAGE_SUFFIXES

STYLES_FILE: Final = "styles.csv"
IMAGES_DIR: Final = "images"
KAGGLE_ID_COLUMN: Final = "id"
KAGGLE_LABEL_COLUMN: Final = "articleType"
"""The column the original system took its 10 categories from."""
KAGGLE_TOP_CLASSES: Final = 10
"""Default number of classes kept from a Kaggle layout: the original system's 10."""
LABELS_CSV_COLUMNS: Final = ("path", "label")

SKIP_REASONS: Final = ("malformed_row", "empty_label", "duplicate", "no_image")
"""Reasons a row is listed in :attr:`TableRows.skipped`, in the order they are checked."""

EXAMPLES_KEPT: Final = 10
"""How many names of images without a row the report shows (all of them are counted)."""


@dataclass(frozen=True)
class Row:
    """One usable row: an existing image and its label.

    Attributes:
        line: 1-based line number in the CSV (the header is line 1).
        key: the row's id (Kaggle) or its path as written (labels CSV).
        path: absolute path of the image file.
        label: the class name, stripped.
    """

    line: int
    key: str
    path: str
    label: str


@dataclass(frozen=True)
class Skipped:
    """A row left out, and why.

    Attributes:
        line: 1-based line number in the CSV.
        key: the row's id or path as written ("" when the row has none).
        reason: one of :data:`SKIP_REASONS`, or a :mod:`preprocessing` error code (the image
            does not decode; added by :mod:`training.manifest`).
        detail: a human-readable explanation.
    """

    line: int
    key: str
    reason: str
    detail: str


@dataclass
class TableRows:
    """What a CSV layout holds.

    Attributes:
        layout: ``"kaggle_styles"`` or ``"labels_csv"``.
        source: absolute path of the CSV file.
        label_column: the column the labels were read from.
        rows: usable rows, in file order.
        skipped: rows left out, in file order.
        repaired: Kaggle rows that had extra commas, as ``{"line", "id", <last column>}`` with
            the last column's value joined back; each is also in ``rows`` unless skipped for
            another reason.
        images_without_row: how many image files of ``images/`` no row names (Kaggle only).
        images_without_row_examples: the first :data:`EXAMPLES_KEPT` of them, sorted.
    """

    layout: str
    source: str
    label_column: str
    rows: list[Row] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    repaired: list[dict] = field(default_factory=list)
    images_without_row: int = 0
    images_without_row_examples: list[str] = field(default_factory=list)

    def label_counts(self) -> Counter:
        """Usable rows per label (rows with an existing image)."""
        return Counter(row.label for row in self.rows)


def is_kaggle_layout(data_dir: Path) -> bool:
    """Tells whether ``data_dir`` holds ``styles.csv`` and an ``images/`` folder.

    Args:
        data_dir: a candidate data set root.

    Returns:
        True for the Kaggle "Fashion Product Images" layout.
    """
    return (data_dir / STYLES_FILE).is_file() and (data_dir / IMAGES_DIR).is_dir()


def _lines(path: Path) -> list[str]:
    """The file's lines without ``\n``/``\r\n`` ends (UTF-8, a byte-order mark tolerated).

    Split on ``\n`` only: ``str.splitlines`` would also cut at characters such as U+2028 that
    may occur inside a product name.
    """
    with open(path, encoding="utf-8-sig", newline="") as fh:
        return [line.removesuffix("\r") for line in fh.read().split("\n")]


def _one_line(text: str) -> list[str]:
    return next(csv.reader([text]), [])


def _image_index(images_dir: Path) -> dict[str, str]:
    """Maps file stem -> file name for the images of ``images_dir`` (``.jpg`` preferred)."""
    index: dict[str, str] = {}
    with os.scandir(images_dir) as it:
        names = sorted(e.name for e in it if e.is_file() and not e.name.startswith("."))
    for name in names:
        stem, suffix = os.path.splitext(name)
        if suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if stem not in index or suffix.lower() == ".jpg":
            index[stem] = name
    return index


def read_kaggle(data_dir: Path, label_column: str = KAGGLE_LABEL_COLUMN) -> TableRows:
    """Reads a Kaggle ``styles.csv`` + ``images/`` layout.

    Args:
        data_dir: the folder holding ``styles.csv`` and ``images/``.
        label_column: the column holding the class names (e.g. ``articleType``,
            ``subCategory``, ``masterCategory``).

    Returns:
        The usable rows (image ``images/<id>.<suffix>``, ``.jpg`` preferred), the skipped rows,
        the repaired rows and the count of images no row names.

    Raises:
        FileNotFoundError: ``styles.csv`` or ``images/`` is missing.
        ValueError: the header has no ``id`` column or no ``label_column``.
    """
    data_dir = Path(data_dir).resolve()
    if not is_kaggle_layout(data_dir):
        raise FileNotFoundError(f"{data_dir} has no {STYLES_FILE} beside an {IMAGES_DIR}/ folder")
    source = data_dir / STYLES_FILE
    lines = _lines(source)
    header = [name.strip() for name in _one_line(lines[0])] if lines else []
    for column in (KAGGLE_ID_COLUMN, label_column):
        if column not in header:
            raise ValueError(f"{source}: no column {column!r}; the header is {header}")
    id_at, label_at, width = header.index(KAGGLE_ID_COLUMN), header.index(label_column), len(header)
    images = _image_index(data_dir / IMAGES_DIR)
    table = TableRows("kaggle_styles", str(source), label_column)
    seen: dict[str, int] = {}
    named: set[str] = set()
    for line_no, text in enumerate(lines[1:], start=2):
        if not text.strip():
            continue
        fields = _one_line(text)
        key = fields[id_at].strip() if len(fields) > id_at else ""
        if len(fields) > width:
            # Unquoted commas inside the last column (productDisplayName): join them back.
            fields = [*fields[: width - 1], ",".join(fields[width - 1 :])]
            table.repaired.append({"line": line_no, "id": key, header[-1]: fields[-1]})
        skip = _kaggle_problem(fields, width, key, seen, images, label_at)
        named.add(key)
        if skip:
            table.skipped.append(Skipped(line_no, key, *skip))
            continue
        seen[key] = line_no
        path = data_dir / IMAGES_DIR / images[key]
        table.rows.append(Row(line_no, key, str(path), fields[label_at].strip()))
    orphans = sorted(name for stem, name in images.items() if stem not in named)
    table.images_without_row = len(orphans)
    table.images_without_row_examples = orphans[:EXAMPLES_KEPT]
    return table


def _kaggle_problem(
    fields: list[str],
    width: int,
    key: str,
    seen: dict[str, int],
    images: dict[str, str],
    label_at: int,
) -> tuple[str, str] | None:
    if len(fields) < width or not key:
        return "malformed_row", f"{len(fields)} fields, the header has {width}" + (
            "" if key else "; no id"
        )
    if not fields[label_at].strip():
        return "empty_label", "the label column is empty"
    if key in seen:
        return "duplicate", f"id {key} already on line {seen[key]}"
    if key not in images:
        return "no_image", f"{IMAGES_DIR}/{key}.jpg does not exist"
    return None


def read_labels_csv(csv_path: Path) -> TableRows:
    """Reads a generic ``path,label`` CSV.

    Args:
        csv_path: the CSV file; its header must name the columns ``path`` and ``label``.

    Returns:
        The usable rows (paths resolved against the CSV's folder) and the skipped rows.

    Raises:
        FileNotFoundError: the CSV does not exist.
        ValueError: the header lacks ``path`` or ``label``.
    """
    csv_path = Path(csv_path).resolve()
    if not csv_path.is_file():
        raise FileNotFoundError(f"labels CSV {csv_path} does not exist")
    with open(csv_path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        header = [name.strip() for name in next(reader, [])]
        missing = [c for c in LABELS_CSV_COLUMNS if c not in header]
        if missing:
            raise ValueError(f"{csv_path}: the header {header} lacks {missing}")
        path_at, label_at = header.index("path"), header.index("label")
        table = TableRows("labels_csv", str(csv_path), "label")
        seen: dict[str, int] = {}
        for fields in reader:
            line_no = reader.line_num
            if not any(f.strip() for f in fields):
                continue
            key = fields[path_at].strip() if len(fields) > path_at else ""
            skip = _labels_csv_problem(fields, len(header), key, label_at)
            resolved = os.path.normpath(csv_path.parent / key) if not skip else ""
            if not skip and resolved in seen:
                skip = ("duplicate", f"{key} already on line {seen[resolved]}")
            elif not skip and not os.path.isfile(resolved):
                skip = ("no_image", f"{resolved} does not exist")
            if skip:
                table.skipped.append(Skipped(line_no, key, *skip))
                continue
            seen[resolved] = line_no
            table.rows.append(Row(line_no, key, resolved, fields[label_at].strip()))
    return table


def _labels_csv_problem(
    fields: list[str], width: int, key: str, label_at: int
) -> tuple[str, str] | None:
    if len(fields) != width or not key:
        return "malformed_row", f"{len(fields)} fields, the header has {width}" + (
            "" if key else "; no path"
        )
    if not fields[label_at].strip():
        return "empty_label", "the label column is empty"
    return None


def choose_classes(
    counts: Counter, *, top: int | None = None, classes: list[str] | None = None
) -> list[str]:
    """The labels to train on, sorted: a given list, the ``top`` most frequent, or all.

    Ties at the cut are broken by label (Unicode code point order), so the choice is stable.

    Args:
        counts: usable rows per label (:meth:`TableRows.label_counts`).
        top: keep the ``top`` most frequent labels (>= 1).
        classes: keep exactly these labels (exclusive with ``top``).

    Returns:
        The chosen labels in sorted order (the class-id order of ``labels.txt``).

    Raises:
        ValueError: both ``top`` and ``classes`` given, ``top < 1``, a listed class has no
            usable row, or fewer than two classes would be left.
    """
    if top is not None and classes is not None:
        raise ValueError("give either the number of top classes or the list of classes")
    if classes is not None:
        wanted = [c.strip() for c in classes if c.strip()]
        unknown = [c for c in wanted if counts.get(c, 0) == 0]
        if unknown:
            known = ", ".join(sorted(counts))
            raise ValueError(f"no usable row has the label(s) {unknown}; labels found: {known}")
        chosen = sorted(set(wanted))
    elif top is not None:
        if top < 1:
            raise ValueError(f"the number of top classes must be >= 1, got {top}")
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        chosen = sorted(label for label, _ in ranked[:top])
    else:
        chosen = sorted(counts)
    if len(chosen) < 2:
        raise ValueError(f"a classifier needs at least two classes, got {chosen}")
    return chosen
