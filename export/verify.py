"""Check a version folder against the SavedModel contract (docs/CONTRACTS.md §2).

Used on the staging folder before publishing, and by ``python -m export verify <folder>`` on any
published version. Every check is reported, passed or failed; a check whose prerequisite failed is
reported as failed with the reason, so a half-copied folder (no ``variables/``) reads as such.

The signature is read from ``saved_model.pb`` itself (the ``SignatureDef`` TF Serving serves, see
``tensorflow/core/protobuf/meta_graph.proto``), then the folder is loaded with
``tf.saved_model.load`` and run on the warm-up requests. A version with an abstain rule (its
signature has the rule's outputs and ``assets.extra/abstain_rule.json``) is compared with the
NumPy reference of the rule, ``training.calibration.apply_rule``, applied to the Keras model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow.core.protobuf import saved_model_pb2

from contract import (
    ABSTAIN_REASON_LOW_CONFIDENCE,
    ABSTAIN_REASON_NOT_A_KNOWN_CATEGORY,
    INPUT_IMAGES,
    LABELS_FILENAME,
    OUTPUT_ABSTAIN,
    OUTPUT_ABSTAIN_REASON,
    OUTPUT_CLASSES,
    OUTPUT_KNOWN_PROBABILITY,
    OUTPUT_PROBABILITIES,
    RULE_FILENAME,
    SIGNATURE_NAME,
    parse_version,
    read_labels,
)
from export import model_card, warmup
from export import rule as rule_file
from export.rule import AbstainRule
from training import calibration

ASSETS_EXTRA: Final = "assets.extra"
REFERENCE_TOLERANCE: Final = 1e-5
"""Largest accepted absolute difference between SavedModel and Keras probabilities."""
ROW_SUM_TOLERANCE: Final = 1e-5
"""Softmax rows must sum to 1 within this (float32 rounding)."""
REASONS: Final = frozenset(
    {b"", ABSTAIN_REASON_NOT_A_KNOWN_CATEGORY.encode(), ABSTAIN_REASON_LOW_CONFIDENCE.encode()}
)
_RULE_OUTPUTS: Final = {
    OUTPUT_KNOWN_PROBABILITY: tf.float32,
    OUTPUT_ABSTAIN: tf.bool,
    OUTPUT_ABSTAIN_REASON: tf.string,
}
_SHARD = re.compile(r"variables\.data-(\d{5})-of-(\d{5})")


@dataclass(frozen=True)
class Check:
    """One verification result.

    Attributes:
        name: short check name, e.g. ``"signature"``.
        ok: whether it passed.
        detail: what was found (on success) or what is wrong (on failure).
    """

    name: str
    ok: bool
    detail: str


@dataclass
class _Found:
    height: int = 0
    width: int = 0
    num_classes: int = 0
    labels: list[str] | None = None
    card: dict[str, Any] | None = None
    loaded: Any = None
    signature: Any = None
    requests: list[Any] | None = None
    rule_outputs: bool = False
    rule: AbstainRule | None = None


def _dims(tensor_info: Any) -> list[int] | None:
    shape = tensor_info.tensor_shape
    return None if shape.unknown_rank else [d.size for d in shape.dim]


def _check_name(folder: Path) -> Check:
    number = parse_version(folder.name)
    if number is None or number < 1 or str(number) != folder.name:
        return Check(
            "folder name",
            False,
            f"{folder.name!r} is not a canonical positive version number (e.g. '1'); a folder "
            "staged under another name is checked with --as-version N",
        )
    return Check("folder name", True, f"version {number}")


def _check_staged_as(as_version: int) -> Check:
    if as_version < 1:
        return Check("folder name", False, f"--as-version {as_version} is not a positive version")
    return Check("folder name", True, f"staged, to be renamed to {as_version}")


def _check_files(folder: Path) -> Check:
    required = [
        "saved_model.pb",
        "variables/variables.index",
        f"{ASSETS_EXTRA}/{LABELS_FILENAME}",
        f"{ASSETS_EXTRA}/{model_card.FILENAME}",
        f"{ASSETS_EXTRA}/{warmup.FILENAME}",
    ]
    missing = [name for name in required if not (folder / name).is_file()]
    variables = folder / "variables"
    shards = [m for p in variables.glob("variables.data-*") if (m := _SHARD.fullmatch(p.name))]
    if not shards:
        missing.append("variables/variables.data-*")
    else:
        total = int(shards[0].group(2))
        present = {int(m.group(1)) for m in shards}
        missing += [
            f"variables/variables.data-{i:05d}-of-{total:05d}"
            for i in range(total)
            if i not in present
        ]
    if missing:
        return Check(
            "files",
            False,
            "missing "
            + ", ".join(missing)
            + (" (a half-copied folder?)" if any("variables" in m for m in missing) else ""),
        )
    return Check("files", True, f"SavedModel, {len(shards)} variable shard(s), assets.extra")


def _check_signature(folder: Path, found: _Found) -> Check:
    try:
        saved = saved_model_pb2.SavedModel.FromString((folder / "saved_model.pb").read_bytes())
    except (OSError, DecodeError) as exc:
        return Check("signature", False, f"saved_model.pb is not a readable SavedModel: {exc}")
    if not saved.meta_graphs or SIGNATURE_NAME not in saved.meta_graphs[0].signature_def:
        return Check("signature", False, f"no {SIGNATURE_NAME!r} signature")
    sig = saved.meta_graphs[0].signature_def[SIGNATURE_NAME]
    problems = []
    if set(sig.inputs) != {INPUT_IMAGES}:
        problems.append(f"inputs {sorted(sig.inputs)} != ['{INPUT_IMAGES}']")
    else:
        images = sig.inputs[INPUT_IMAGES]
        dims = _dims(images)
        if images.dtype != tf.uint8.as_datatype_enum:
            problems.append(f"input dtype {tf.as_dtype(images.dtype).name} != uint8")
        if dims is None or len(dims) != 4 or dims[0] != -1 or dims[3] != 3 or min(dims[1:3]) < 1:
            problems.append(f"input shape {dims} != [-1, H, W, 3]")
        else:
            found.height, found.width = dims[1], dims[2]
    expected = {OUTPUT_PROBABILITIES: tf.float32, OUTPUT_CLASSES: tf.string}
    found.rule_outputs = any(name in sig.outputs for name in _RULE_OUTPUTS)
    if found.rule_outputs:
        expected.update(_RULE_OUTPUTS)
    if set(sig.outputs) != set(expected):
        problems.append(f"outputs {sorted(sig.outputs)} != {sorted(expected)}")
    else:
        widths = set()
        for name, dtype in expected.items():
            dims = _dims(sig.outputs[name])
            if sig.outputs[name].dtype != dtype.as_datatype_enum:
                problems.append(
                    f"{name} dtype {tf.as_dtype(sig.outputs[name].dtype).name} != {dtype.name}"
                )
            if name in _RULE_OUTPUTS:
                if dims != [-1]:
                    problems.append(f"{name} shape {dims} != [-1]")
            elif dims is None or len(dims) != 2 or dims[0] != -1 or dims[1] < 1:
                problems.append(f"{name} shape {dims} != [-1, C]")
            else:
                widths.add(dims[1])
        if len(widths) > 1:
            problems.append(f"output widths differ: {sorted(widths)}")
        elif widths:
            found.num_classes = widths.pop()
    if problems:
        return Check("signature", False, "; ".join(problems))
    rule_part = (
        f", {OUTPUT_KNOWN_PROBABILITY} float32 [-1], {OUTPUT_ABSTAIN} bool [-1], "
        f"{OUTPUT_ABSTAIN_REASON} string [-1]"
        if found.rule_outputs
        else ""
    )
    return Check(
        "signature",
        True,
        f"{INPUT_IMAGES} uint8 [-1,{found.height},{found.width},3] -> "
        f"{OUTPUT_PROBABILITIES} float32 [-1,{found.num_classes}], "
        f"{OUTPUT_CLASSES} string [-1,{found.num_classes}]{rule_part}",
    )


def _check_rule(folder: Path, found: _Found) -> Check | None:
    path = folder / ASSETS_EXTRA / RULE_FILENAME
    if not found.rule_outputs and not path.exists():
        return None  # a version without a rule: nothing to check
    if not path.is_file():
        return Check("abstain rule", False, f"the signature has the rule's outputs but no {path}")
    try:
        found.rule = rule_file.read(path)
    except (OSError, ValueError) as exc:
        return Check("abstain rule", False, str(exc))
    problems = []
    if not found.rule_outputs:
        problems.append(f"{RULE_FILENAME} is present but the signature has no rule outputs")
    if found.card is not None and found.card.get("abstain_rule") != found.rule.document:
        problems.append("the model card's abstain_rule differs from the file")
    if problems:
        return Check("abstain rule", False, "; ".join(problems))
    return Check(
        "abstain rule", True, ", ".join(f"{k} {v}" for k, v in found.rule.as_kwargs().items())
    )


def _check_labels(folder: Path, found: _Found) -> Check:
    try:
        found.labels = read_labels(folder / ASSETS_EXTRA / LABELS_FILENAME)
    except (OSError, ValueError) as exc:
        return Check("labels", False, str(exc))
    if found.num_classes and len(found.labels) != found.num_classes:
        return Check(
            "labels", False, f"{len(found.labels)} labels for {found.num_classes} model outputs"
        )
    return Check("labels", True, f"{len(found.labels)} labels: {', '.join(found.labels)}")


def _check_card(folder: Path, found: _Found, expected_version: int | None) -> Check:
    """The card's labels and input shape match the SavedModel, and its version is
    ``expected_version`` (None: the folder name is no version, already a failed check)."""
    try:
        card = model_card.read(folder / ASSETS_EXTRA / model_card.FILENAME)
    except (OSError, ValueError) as exc:
        return Check("model card", False, str(exc))
    found.card = card
    problems = []
    if found.labels is not None and card.get("labels") != found.labels:
        problems.append("labels differ from labels.txt")
    shape = card.get("signature", {}).get("inputs", {}).get(INPUT_IMAGES, {}).get("shape")
    if found.height and shape != [-1, found.height, found.width, 3]:
        problems.append(f"input shape {shape} differs from the signature's")
    if expected_version is not None and expected_version != card.get("version"):
        problems.append(
            f"card says version {card.get('version')}, the folder is to be version "
            f"{expected_version} ({folder.name!r})"
        )
    if problems:
        return Check("model card", False, "; ".join(problems))
    accuracy = (card.get("metrics") or {}).get("accuracy")
    return Check(
        "model card",
        True,
        f"{card.get('name')} v{card.get('version')}, "
        f"created {card.get('created_at')}, test accuracy {accuracy}",
    )


def _check_load(folder: Path, found: _Found) -> Check:
    try:
        loaded = tf.saved_model.load(str(folder))
        found.signature = loaded.signatures[SIGNATURE_NAME]
    except Exception as exc:  # TF raises many error types for damaged folders
        return Check(
            "load",
            False,
            f"tf.saved_model.load failed: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}",
        )
    found.loaded = loaded  # keep the object alive while its signature is used
    return Check("load", True, "tf.saved_model.load restored the variables")


def _check_warmup(folder: Path, found: _Found) -> Check:
    try:
        records = warmup.read(folder / ASSETS_EXTRA / warmup.FILENAME)
    except (tf.errors.OpError, DecodeError) as exc:
        return Check("warm-up", False, f"unparseable: {type(exc).__name__}: {exc}")
    if not 1 <= len(records) <= warmup.MAX_RECORDS:
        return Check("warm-up", False, f"{len(records)} records, TF Serving reads 1..1000")
    problems, sizes, requests = [], [], []
    name = (found.card or {}).get("name")
    for index, record in enumerate(records):
        if record.WhichOneof("log_type") != "predict_log":
            problems.append(f"record {index} is not a predict_log")
            continue
        request = record.predict_log.request
        requests.append(request)
        if request.model_spec.signature_name not in ("", SIGNATURE_NAME):
            problems.append(f"record {index} signature {request.model_spec.signature_name!r}")
        if name is not None and request.model_spec.name != name:
            problems.append(f"record {index} model name {request.model_spec.name!r} != {name!r}")
        if set(request.inputs) != {INPUT_IMAGES}:
            problems.append(f"record {index} inputs {sorted(request.inputs)}")
            continue
        tensor = request.inputs[INPUT_IMAGES]
        dims = [d.size for d in tensor.tensor_shape.dim]
        if tensor.dtype != tf.uint8.as_datatype_enum:
            problems.append(f"record {index} dtype {tf.as_dtype(tensor.dtype).name} != uint8")
        if len(dims) != 4 or dims[1:] != [found.height, found.width, 3]:
            problems.append(f"record {index} shape {dims} != [b,{found.height},{found.width},3]")
        else:
            sizes.append(dims[0])
    if sorted(sizes) != sorted(warmup.BATCH_SIZES) and not problems:
        problems.append(f"batch sizes {sizes} != {list(warmup.BATCH_SIZES)}")
    if problems:
        return Check("warm-up", False, "; ".join(problems))
    found.requests = requests
    return Check("warm-up", True, f"{len(records)} PredictionLog records, batch sizes {sizes}")


def _run(found: _Found, images: np.ndarray) -> dict[str, np.ndarray]:
    outputs = found.signature(**{INPUT_IMAGES: tf.constant(images, tf.uint8)})
    return {name: tensor.numpy() for name, tensor in outputs.items()}


def _rule_problems(outputs: dict[str, np.ndarray], batch: int) -> list[str]:
    known, abstain, reason = (
        outputs[n] for n in (OUTPUT_KNOWN_PROBABILITY, OUTPUT_ABSTAIN, OUTPUT_ABSTAIN_REASON)
    )
    problems = []
    for name, value, dtype in (
        (OUTPUT_KNOWN_PROBABILITY, known, np.float32),
        (OUTPUT_ABSTAIN, abstain, np.bool_),
        (OUTPUT_ABSTAIN_REASON, reason, np.object_),
    ):
        if value.shape != (batch,) or value.dtype != dtype:
            problems.append(f"batch {batch}: {name} {value.dtype} {value.shape}")
    if problems:
        return problems
    if not np.isfinite(known).all() or known.min() < 0 or known.max() > 1 + ROW_SUM_TOLERANCE:
        problems.append(f"batch {batch}: {OUTPUT_KNOWN_PROBABILITY} outside [0, 1]")
    if not set(reason.tolist()) <= REASONS:
        problems.append(f"batch {batch}: unknown reasons {sorted(set(reason.tolist()) - REASONS)}")
    if ((reason != b"") != abstain).any():
        problems.append(f"batch {batch}: {OUTPUT_ABSTAIN} is not ({OUTPUT_ABSTAIN_REASON} != '')")
    return problems


def _check_outputs(found: _Found) -> Check:
    problems = []
    expected = np.array([label.encode() for label in found.labels or []], dtype=object)
    for request in found.requests or []:
        images = tf.make_ndarray(request.inputs[INPUT_IMAGES])
        outputs = _run(found, images)
        probabilities, classes = outputs[OUTPUT_PROBABILITIES], outputs[OUTPUT_CLASSES]
        batch = len(images)
        if probabilities.shape != (batch, found.num_classes) or probabilities.dtype != np.float32:
            problems.append(f"probabilities {probabilities.dtype} {probabilities.shape}")
            continue
        sums = probabilities.sum(axis=1)
        if not np.isfinite(probabilities).all() or np.abs(sums - 1).max() > ROW_SUM_TOLERANCE:
            problems.append(f"batch {batch}: rows sum to {sums.min()}..{sums.max()}, not 1")
        if classes.shape != (batch, len(expected)) or not (classes == expected).all():
            problems.append(f"batch {batch}: classes rows are not the labels")
        if found.rule_outputs:
            problems += _rule_problems(outputs, batch)
    if problems:
        return Check("outputs", False, "; ".join(problems))
    rule_part = ", abstain = reason != ''" if found.rule_outputs else ""
    return Check(
        "outputs",
        True,
        f"warm-up requests run: softmax rows sum to 1, classes = labels{rule_part}",
    )


def _check_reference(found: _Found, reference: Any, samples: np.ndarray) -> Check:
    outputs = _run(found, samples)
    probabilities = outputs[OUTPUT_PROBABILITIES]
    keras_out = np.asarray(reference(tf.constant(samples, tf.float32), training=False))
    if found.rule is None:
        expected = keras_out.astype(np.float32)
        if expected.shape != probabilities.shape:
            return Check(
                "matches Keras", False, f"shapes {expected.shape} vs {probabilities.shape}"
            )
        diff = float(np.abs(expected - probabilities).max())
        detail = f"max |SavedModel - Keras| = {diff:.2e} on {len(samples)} sample images"
        ok = diff <= REFERENCE_TOLERANCE
        return Check("matches Keras", ok, detail + ("" if ok else f" > {REFERENCE_TOLERANCE}"))
    return _check_rule_reference(found, outputs, keras_out)


def _check_rule_reference(
    found: _Found, outputs: dict[str, np.ndarray], keras_out: np.ndarray
) -> Check:
    rule = found.rule
    try:
        ref = calibration.apply_rule(keras_out, **rule.as_kwargs())
    except ValueError as exc:
        return Check("matches rule", False, f"the rule does not fit the Keras model: {exc}")
    probabilities = outputs[OUTPUT_PROBABILITIES]
    if ref.probabilities.shape != probabilities.shape:
        return Check(
            "matches rule", False, f"shapes {ref.probabilities.shape} vs {probabilities.shape}"
        )
    diff = max(
        float(np.abs(ref.probabilities - probabilities).max()),
        float(np.abs(ref.known_probability - outputs[OUTPUT_KNOWN_PROBABILITY]).max()),
    )
    # a row whose score is within the tolerance of a threshold may fall either side in float32
    near = np.abs(ref.probabilities.max(axis=1) - rule.min_confidence) <= REFERENCE_TOLERANCE
    if rule.min_known_probability is not None:
        near |= np.abs(ref.known_probability - rule.min_known_probability) <= REFERENCE_TOLERANCE
    served = outputs[OUTPUT_ABSTAIN_REASON].astype(str)
    differ = int(((served != ref.abstain_reason) & ~near).sum())
    reasons, counts = np.unique(ref.abstain_reason.astype(str), return_counts=True)
    counts = {str(r) or "filed": int(n) for r, n in zip(reasons, counts, strict=True)}
    detail = (
        f"max |SavedModel - NumPy rule on Keras| = {diff:.2e}, reasons {counts}, "
        f"{differ} decision(s) differ, {int(near.sum())} at a threshold, "
        f"on {len(keras_out)} sample images"
    )
    ok = diff <= REFERENCE_TOLERANCE and differ == 0
    return Check("matches rule", ok, detail + ("" if ok else f" (tolerance {REFERENCE_TOLERANCE})"))


def verify(
    folder: Path,
    *,
    reference: Any = None,
    samples: np.ndarray | None = None,
    as_version: int | None = None,
) -> list[Check]:
    """Run every check on a version (or staging) folder.

    Args:
        folder: the folder holding ``saved_model.pb``.
        reference: optional Keras model the SavedModel was made from; its probabilities on
            ``samples`` must match within :data:`REFERENCE_TOLERANCE`.
        samples: ``uint8`` images ``(N, H, W, 3)`` for the reference comparison.
        as_version: for a folder staged under a non-version name (export's
            ``.staging-<v>-<pid>``, or ``.incoming-7`` by hand), the version it is to be renamed
            to, checked against the card instead of the folder name; None = the folder name
            must be a canonical version number matching the card.

    Returns:
        The checks in order: folder name (or the staged-as version), files, signature, labels,
        model card, abstain rule (for a version with one), load, warm-up, outputs, and, when a
        reference is given, "matches Keras" (no rule) or "matches rule" (the rule's NumPy
        reference).
    """
    found = _Found()
    if as_version is not None:
        checks = [_check_staged_as(as_version)]
        expected_version = as_version
    else:
        checks = [_check_name(folder)]
        expected_version = parse_version(folder.name)
    if not folder.is_dir():
        return checks + [Check("files", False, f"{folder} is not a directory")]
    checks.append(_check_files(folder))
    if not (folder / "saved_model.pb").is_file():
        return checks
    checks.append(_check_signature(folder, found))
    checks.append(_check_labels(folder, found))
    checks.append(_check_card(folder, found, expected_version))
    rule_check = _check_rule(folder, found)
    if rule_check is not None:
        checks.append(rule_check)
    checks.append(_check_load(folder, found))
    if found.signature is None or not found.num_classes:
        checks.append(
            Check(
                "outputs", False, "not run: the SavedModel did not load or its signature is wrong"
            )
        )
        return checks
    checks.append(_check_warmup(folder, found))
    if found.requests and found.labels:
        checks.append(_check_outputs(found))
    else:
        checks.append(Check("outputs", False, "not run: no usable warm-up requests or labels"))
    if reference is not None and samples is not None:
        if found.rule_outputs and found.rule is None:
            checks.append(Check("matches rule", False, "not run: no readable abstain rule"))
        else:
            checks.append(_check_reference(found, reference, samples))
    return checks


def passed(checks: list[Check]) -> bool:
    """Whether every check passed.

    Args:
        checks: from :func:`verify`.

    Returns:
        ``True`` when there is at least one check and none failed.
    """
    return bool(checks) and all(check.ok for check in checks)
