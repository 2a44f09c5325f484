"""contract.folders: labels <-> folder names of the nightly job, and the check export makes."""

from __future__ import annotations

import random

import pytest

from contract.folders import (
    MAX_FOLDER_BYTES,
    check_labels,
    clash_key,
    folder_to_label,
    label_to_folder,
)

RELEASE_LABELS = [
    "dress",
    "hat",
    "longsleeve",
    "outwear",
    "pants",
    "shirt",
    "shoes",
    "shorts",
    "skirt",
    "t-shirt",
]

TABLE = [
    ("Casual Shoes", "Casual_Shoes"),
    ("Tshirts", "Tshirts"),
    ("Jupes d'été", "Jupes_d%27été"),
    ("Straße", "Straße"),
    ("日本 語", "日本_語"),
    ("50%_off", "50%25%5Foff"),
    ("a/b\\c:d", "a%2Fb%5Cc%3Ad"),
    ("v1.2", "v1.2"),
    (".hidden", "%2Ehidden"),
    ("end.", "end%2E"),
    ("..", "%2E%2E"),
    (" lead", "%20lead"),
    ("_uncertain", "%5Funcertain"),
    ("CON", "%43ON"),
    ("nul.txt", "%6Eul.txt"),
    ("COM1", "%43OM1"),
    ("console", "console"),
    ("e\u0301", "e%CC%81"),  # a decomposed é: the combining accent is not a letter
    ("tab\there", "tab%09here"),
    ("😀", "%F0%9F%98%80"),
]


@pytest.mark.unit
@pytest.mark.parametrize(("label", "folder"), TABLE)
def test_table_both_ways(label, folder):
    assert label_to_folder(label) == folder
    assert folder_to_label(folder) == label


@pytest.mark.unit
def test_release_labels_keep_their_folders():
    assert [label_to_folder(label) for label in RELEASE_LABELS] == RELEASE_LABELS


@pytest.mark.unit
def test_random_labels_round_trip_and_stay_safe():
    rng = random.Random(7)
    alphabet = "aZ9 -._%/\\:*?\"<>|'\t\nÉéßı日😀\u0301\u2028\x00"
    for _ in range(3000):
        label = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
        folder = label_to_folder(label)
        assert folder_to_label(folder) == label
        assert not folder.startswith(("_", ".")) and not folder.endswith(".")
        assert not any(c in folder for c in '/\\:*?"<>| \t\n\x00\u2028')
        assert folder not in (".", "..")


@pytest.mark.unit
@pytest.mark.parametrize("name", ["_uncertain", "a b", "%zz", "%2e", "", "CON", "a%2Db", "%C3"])
def test_names_no_label_maps_to_are_refused(name):
    with pytest.raises(ValueError, match="is not a folder name made from a label"):
        folder_to_label(name)


@pytest.mark.unit
def test_empty_label_has_no_folder():
    with pytest.raises(ValueError, match="empty label"):
        label_to_folder("")


@pytest.mark.unit
def test_check_labels_returns_the_folders():
    assert check_labels(["Casual Shoes", "Jupes d'été"]) == ["Casual_Shoes", "Jupes_d%27été"]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (["Shirts", "shirts"], "'Shirts', 'shirts' -> the same folder 'Shirts'"),
        (["Casual Shoes", "casual_shoes"], None),  # different: '_' is written %5F
        (["ÉTÉ", "été"], "'ÉTÉ', 'été' -> the same folder"),
        (["Straße", "STRASSE"], "'Straße', 'STRASSE' -> the same folder"),
        (["a" * 256, "b"], f"256-byte folder name (at most {MAX_FOLDER_BYTES})"),
    ],
)
def test_check_labels_refuses_what_one_folder_would_hold(labels, message):
    if message is None:
        assert len(set(map(clash_key, check_labels(labels)))) == len(labels)
        return
    with pytest.raises(ValueError, match="labels without a folder of their own") as err:
        check_labels(labels)
    assert message in str(err.value)
