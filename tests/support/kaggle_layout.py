"""A small fake of Kaggle's "Fashion Product Images" layout, built from the shared real photos.

``styles.csv`` has the real header and is written unquoted, as Kaggle's is. What it holds, line by
line (line 1 is the header), is :data:`ROWS`; the odd rows are:

- line 6, id 20003: ``productDisplayName`` with two unquoted commas (12 fields);
- line 13, id 10009: a ``Casual Shoes`` row whose image does not exist;
- line 24, id 30007: an image that does not decode (a truncated JPEG);
- lines 30-32: too few fields, an empty ``articleType``, and id 10001 a second time;
- a blank last line.

``images/99999.jpg`` is an image no row names. Labels: ``Casual Shoes`` (8 usable rows, shoes
photos), ``Track Pants`` (7, pants), ``Jupes d'été`` (7, skirts, one undecodable), ``Caps`` (3,
hats) and ``Tshirts`` (2, t-shirts).
"""

from __future__ import annotations

import shutil
from pathlib import Path

SMALL = Path(__file__).resolve().parents[2].parent / "shared/data/clothing-dataset-small"

HEADER = (
    "id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,"
    "productDisplayName"
)

# (id, source class folder in clothing-dataset-small or None, the rest of the line after "id,")
ROWS: list[tuple[str, str | None, str]] = [
    *[
        (f"1000{i}", "shoes", f"Men,Footwear,Shoes,Casual Shoes,White,Summer,2012,Casual,Shoe {i}")
        for i in range(1, 3)
    ],
    ("20001", "pants", "Men,Apparel,Bottomwear,Track Pants,Navy Blue,Fall,2011,Sports,Pants 1"),
    ("20002", "pants", "Men,Apparel,Bottomwear,Track Pants,Black,Fall,2011,Sports,Pants 2"),
    (
        "20003",
        "pants",
        "Men,Apparel,Bottomwear,Track Pants,Grey,Fall,2011,Sports,Puma Men, Women Pants, Grey",
    ),
    *[
        (f"1000{i}", "shoes", f"Men,Footwear,Shoes,Casual Shoes,Black,Winter,2013,Casual,Shoe {i}")
        for i in range(3, 9)
    ],
    ("10009", None, "Men,Footwear,Shoes,Casual Shoes,Brown,Winter,2013,Casual,Lost shoe"),
    *[
        (f"2000{i}", "pants", f"Women,Apparel,Bottomwear,Track Pants,Red,Fall,2016,Sports,P {i}")
        for i in range(4, 8)
    ],
    *[
        (
            f"3000{i}",
            "skirt",
            f"Women,Apparel,Bottomwear,Jupes d'été,Blue,Summer,2017,Casual,Jupe {i}",
        )
        for i in range(1, 8)
    ],
    *[
        (f"4000{i}", "hat", f"Unisex,Accessories,Headwear,Caps,Black,Summer,2012,Casual,Cap {i}")
        for i in range(1, 4)
    ],
    *[
        (f"5000{i}", "t-shirt", f"Men,Apparel,Topwear,Tshirts,White,Summer,2012,Casual,Tee {i}")
        for i in range(1, 3)
    ],
    ("60001", None, "Men,Apparel"),
    ("60002", None, "Men,Apparel,Topwear,,Blue,Summer,2012,Casual,No type"),
    ("10001", None, "Men,Footwear,Shoes,Casual Shoes,White,Summer,2012,Casual,Shoe again"),
]

UNDECODABLE_ID = "30007"
ORPHAN_ID = "99999"


def source_photos(folder: str, split: str = "train") -> list[Path]:
    """The sorted real photos of one class folder of clothing-dataset-small."""
    return sorted((SMALL / split / folder).glob("*.jpg"))


def build(root: Path) -> Path:
    """Writes the fake layout into ``root`` (created) and returns ``root``.

    Args:
        root: the data set folder to create: ``root/styles.csv`` and ``root/images/``.

    Returns:
        ``root``.
    """
    images = root / "images"
    images.mkdir(parents=True)
    used: dict[str, int] = {}
    lines = [HEADER]
    for row_id, folder, rest in ROWS:
        lines.append(f"{row_id},{rest}")
        target = images / f"{row_id}.jpg"
        if folder is None or target.exists():
            continue
        n = used.get(folder, 0)
        used[folder] = n + 1
        shutil.copyfile(source_photos(folder)[n], target)
    data = (images / f"{UNDECODABLE_ID}.jpg").read_bytes()
    (images / f"{UNDECODABLE_ID}.jpg").write_bytes(data[: len(data) // 3])
    shutil.copyfile(source_photos("shoes")[20], images / f"{ORPHAN_ID}.jpg")
    (root / "styles.csv").write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    return root


def build_sized(root: Path, per_class: int) -> Path:
    """A clean layout of the same format with ``per_class`` rows of each of three classes.

    For timing ``prepare`` and ``train`` per 1,000 images (README): ``Casual Shoes`` (shoes),
    ``Track Pants`` (pants), ``Jupes d'été`` (skirt) photos of the small set's train split, one
    extra-comma product name per class, no odd rows.

    Args:
        root: the data set folder to create.
        per_class: rows (and photos) per class; at most 112 (the skirt folder's size).

    Returns:
        ``root``.
    """
    images = root / "images"
    images.mkdir(parents=True)
    lines = [HEADER]
    classes = [
        ("shoes", "Men,Footwear,Shoes,Casual Shoes,White,Summer,2012,Casual"),
        ("pants", "Men,Apparel,Bottomwear,Track Pants,Navy Blue,Fall,2011,Sports"),
        ("skirt", "Women,Apparel,Bottomwear,Jupes d'été,Blue,Summer,2017,Casual"),
    ]
    for c, (folder, rest) in enumerate(classes):
        for i, src in enumerate(source_photos(folder)[:per_class]):
            row_id = f"{c + 1}{i:05d}"
            name = f"Item {i}, size M, cotton" if i == 0 else f"Item {i}"
            lines.append(f"{row_id},{rest},{name}")
            shutil.copyfile(src, images / f"{row_id}.jpg")
    (root / "styles.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root
