"""What ``python -m export list`` shows: the versions of a base path and their model cards.

Reads only the folder names and ``assets.extra/model_card.json`` (no TensorFlow), so it is quick
to run next to a live server.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from export import layout, model_card
from export.verify import ASSETS_EXTRA


@dataclass(frozen=True)
class VersionInfo:
    """One row of the listing.

    Attributes:
        version: the number TF Serving reads from the folder name.
        folder: the folder name.
        accuracy: test accuracy from the card's metrics, or ``None`` if not measured.
        created_at: the card's ISO-8601 UTC creation time, or ``None`` without a card.
        note: ``""`` or what is wrong ("no model card", "no saved_model.pb").
    """

    version: int
    folder: str
    accuracy: float | None
    created_at: str | None
    note: str


def versions(base_path: Path) -> list[VersionInfo]:
    """Describe every version folder, oldest version first.

    Args:
        base_path: the model base path.

    Returns:
        One :class:`VersionInfo` per integer-named folder (colliding names each get a row).

    Raises:
        LayoutError: ``base_path`` is not a directory.
    """
    rows = []
    scanned = layout.scan(base_path)
    for number in sorted(scanned.versions):
        for folder in sorted(scanned.versions[number]):
            path = base_path / folder
            accuracy = created = None
            notes = []
            if not (path / "saved_model.pb").is_file():
                notes.append("no saved_model.pb")
            try:
                card = model_card.read(path / ASSETS_EXTRA / model_card.FILENAME)
                accuracy = (card.get("metrics") or {}).get("accuracy")
                created = card.get("created_at")
            except (OSError, ValueError):
                notes.append("no readable model card")
            if folder != str(number):
                notes.append(f"non-canonical name, TF Serving reads it as version {number}")
            if len(scanned.versions[number]) > 1:
                notes.append(f"collides with {sorted(set(scanned.versions[number]) - {folder})}")
            rows.append(VersionInfo(number, folder, accuracy, created, "; ".join(notes)))
    return rows


def format_table(rows: list[VersionInfo]) -> str:
    """Render rows as a fixed-width text table.

    Args:
        rows: from :func:`versions`.

    Returns:
        A header line and one line per row, newline-terminated.
    """
    lines = [f"{'VERSION':<8} {'ACCURACY':<9} {'CREATED_AT':<21} NOTE"]
    for row in rows:
        accuracy = f"{row.accuracy:.4f}" if isinstance(row.accuracy, int | float) else "-"
        lines.append(
            f"{row.folder:<8} {accuracy:<9} {row.created_at or '-':<21} {row.note}".rstrip()
        )
    return "\n".join(lines) + "\n"
