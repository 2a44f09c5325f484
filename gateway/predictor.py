"""The data plane: image bytes -> model input -> Predict -> labelled top-k. No Flask here.

Decoding is ``preprocessing.decode`` (the code training used) at the size the model's signature
declares; a batch is decoded on a thread pool (Pillow releases the GIL while decoding and
resizing). Decoded images are stacked and sent in Predict calls of at most ``PREDICT_CHUNK_SIZE``
images, each as soon as its images are decoded; up to ``PREDICT_PARALLEL_CHUNKS`` calls of one
request are in flight at once, so the model server can run them on different cores (or merge them
with other callers' calls when it batches). Every item of a response is labelled by one version:
the version that answered the first chunk; a chunk answered by another (a version swap while it
was in flight) is asked again of that version. With one call at a time, later calls are pinned to
the first answer's version before they are sent. Labels come from the ``classes`` output of the
same Predict response (docs/CONTRACTS.md section 2): the gateway holds no label list. Likewise the
abstain decision: when the version's signature has the rule's outputs, each classification carries
``abstain``, ``abstain_reason`` and ``known_probability`` from the same response; otherwise it has
none.

With a prediction cache (:mod:`gateway.cache`), images whose bytes were answered before by the
version this request resolves to are answered from their cached output rows; only the others are
decoded and sent, pinned to that version so the whole response stays labelled by one version.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import numpy as np

import preprocessing
from contract import (
    OUTPUT_ABSTAIN,
    OUTPUT_ABSTAIN_REASON,
    OUTPUT_CLASSES,
    OUTPUT_KNOWN_PROBABILITY,
    OUTPUT_PROBABILITIES,
    RULE_OUTPUTS,
)
from gateway.cache import PredictionCache, Row, VersionResolver, cache_key, image_digest
from gateway.errors import ErrorCode, GatewayError, from_image_error
from gateway.metrics import Metrics
from gateway.model_info import InputSpec, ModelInfo
from gateway.serving_client import LATEST, PredictResult, ServingClient, VersionSelector
from gateway.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Classification:
    """The prediction for one image.

    Attributes:
        label: top-1 label.
        class_id: column of ``label`` in the version's class list.
        confidence: top-1 probability, 0..1.
        top_k: the ``k`` most probable classes, most probable first, as
            ``{"label", "class_id", "probability"}`` dicts.
        abstain: the version is not sure enough to file the image; ``None`` when the version
            has no abstain rule.
        abstain_reason: ``"low_confidence"`` or ``"not_a_known_category"`` when abstaining,
            else ``None``.
        known_probability: the version's probability that the image is one of its labels, 0..1;
            ``None`` without a rule.
    """

    label: str
    class_id: int
    confidence: float
    top_k: list[dict]
    abstain: bool | None = None
    abstain_reason: str | None = None
    known_probability: float | None = None

    def as_json(self) -> dict:
        """The contract's prediction object (docs/CONTRACTS.md section 4).

        The ``abstain``, ``abstain_reason`` (``null`` when filed) and ``known_probability`` keys
        are present only for a version with an abstain rule.
        """
        body = {
            "label": self.label,
            "class_id": self.class_id,
            "confidence": self.confidence,
            "top_k": self.top_k,
        }
        if self.abstain is not None:
            body["abstain"] = self.abstain
            body["abstain_reason"] = self.abstain_reason
            body["known_probability"] = self.known_probability
        return body


@dataclass(frozen=True)
class ItemResult:
    """Outcome of one image: a classification or the error that stopped it."""

    classification: Classification | None = None
    error: GatewayError | None = None


@dataclass(frozen=True)
class Answer:
    """Outcome of a request.

    Attributes:
        model_name: the model that answered (configured name if no Predict call was made).
        version: the version that answered, None if no image reached the model.
        items: one result per input image, in input order.
        cache: ``"hit"`` every predicted image came from the cache, ``"miss"`` otherwise, None
            when the gateway has no prediction cache.
    """

    model_name: str
    version: int | None
    items: list[ItemResult]
    cache: str | None = None


def classify_rows(
    probabilities: np.ndarray,
    classes: np.ndarray,
    top_k: int,
    rule: dict[str, np.ndarray] | None = None,
) -> list[Classification]:
    """Turn Predict outputs into labelled top-k lists.

    Args:
        probabilities: float ``(n, num_classes)``, rows sum to 1.
        classes: bytes objects ``(n, num_classes)``; ``classes[i][j]`` names
            ``probabilities[i][j]``.
        top_k: list length wanted; capped at ``num_classes``.
        rule: for a version with an abstain rule, its outputs ``abstain`` bool ``(n,)``,
            ``abstain_reason`` bytes ``(n,)`` and ``known_probability`` float ``(n,)``.

    Returns:
        ``n`` classifications in row order. Ties keep the lower class id first.

    Raises:
        GatewayError: ``serving_error`` (502) for a malformed response: shapes that disagree,
            probabilities that are not finite floats in [0, 1], labels that are not text.
    """
    if probabilities.ndim != 2 or probabilities.shape != classes.shape:
        raise GatewayError(
            ErrorCode.SERVING_ERROR,
            f"model outputs disagree: probabilities "
            f"{list(probabilities.shape)}, classes {list(classes.shape)}",
        )
    if probabilities.shape[1] == 0:
        raise GatewayError(ErrorCode.SERVING_ERROR, "model outputs have no class column")
    floats = np.issubdtype(probabilities.dtype, np.floating)
    if (
        not floats
        or not (np.isfinite(probabilities) & (probabilities >= 0) & (probabilities <= 1)).all()
    ):
        raise GatewayError(
            ErrorCode.SERVING_ERROR,
            f"model output probabilities are not finite {probabilities.dtype} values in [0, 1]",
        )
    if not all(isinstance(value, bytes | str) for value in classes.flat):
        raise GatewayError(ErrorCode.SERVING_ERROR, "model output classes are not strings")
    if rule is not None:
        shapes = {key: list(np.shape(value)) for key, value in rule.items()}
        if any(shape != [len(probabilities)] for shape in shapes.values()):
            raise GatewayError(
                ErrorCode.SERVING_ERROR,
                f"model outputs disagree: probabilities {list(probabilities.shape)}, {shapes}",
            )
    k = min(top_k, probabilities.shape[1])
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    results = []
    for row, ids in enumerate(order):
        top = [
            {
                "label": _text(classes[row, j]),
                "class_id": int(j),
                "probability": float(probabilities[row, j]),
            }
            for j in ids
        ]
        decision = {}
        if rule is not None:
            reason = _text(rule[OUTPUT_ABSTAIN_REASON][row])
            decision = {
                "abstain": bool(rule[OUTPUT_ABSTAIN][row]),
                "abstain_reason": reason or None,
                "known_probability": float(rule[OUTPUT_KNOWN_PROBABILITY][row]),
            }
        results.append(
            Classification(
                label=top[0]["label"],
                class_id=top[0]["class_id"],
                confidence=top[0]["probability"],
                top_k=top,
                **decision,
            )
        )
    return results


@dataclass(frozen=True)
class _Partial(Answer):
    stored: int = 0
    """images answered (from the cache or the model)"""


def _stack(rows: Sequence[Row]) -> dict[str, np.ndarray]:
    """Cached rows -> outputs with one row per image, as a Predict response has them."""
    return {key: np.stack([row[key] for row in rows]) for key in rows[0]}


def _text(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _done(value: object) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


class Predictor:
    """Classifies uploaded images with the served model.

    Args:
        client: the serving client.
        model_info: input spec cache.
        settings: chunk size, pixel limit, decode threads.
        metrics: where decode time, labels and answering versions are recorded.
        cache: the prediction cache, or None for none.
        resolver: resolves the version a request would get (needed with ``cache``).
    """

    def __init__(
        self,
        client: ServingClient,
        model_info: ModelInfo,
        settings: Settings,
        metrics: Metrics,
        *,
        cache: PredictionCache | None = None,
        resolver: VersionResolver | None = None,
    ) -> None:
        if (cache is None) != (resolver is None):
            raise ValueError("give both cache and resolver, or neither")
        self._cache = cache
        self._resolver = resolver
        self._client = client
        self._info = model_info
        self._settings = settings
        self._metrics = metrics
        self._pool = ThreadPoolExecutor(
            max_workers=settings.decode_threads, thread_name_prefix="decode"
        )
        # Predict calls of chunks sent without waiting (PREDICT_PARALLEL_CHUNKS > 1); a call
        # waits on the network, so a few threads serve all requests of the process.
        self._calls = ThreadPoolExecutor(
            max_workers=max(2, 2 * settings.predict_parallel_chunks), thread_name_prefix="predict"
        )

    def close(self) -> None:
        """Stop the decode and Predict-call threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._calls.shutdown(wait=False, cancel_futures=True)

    def _decode(self, data: bytes, spec: InputSpec) -> np.ndarray | GatewayError:
        start = time.perf_counter()
        try:
            return preprocessing.decode(data, spec.size, max_pixels=self._settings.max_image_pixels)
        except preprocessing.ImageError as exc:
            return from_image_error(exc)
        except Exception:  # a crafted file can trip any error inside a Pillow plugin
            log.exception("unexpected error decoding an upload of %d bytes", len(data))
            return GatewayError(ErrorCode.CORRUPT_IMAGE, "the image could not be decoded")
        finally:
            self._metrics.decode_seconds.observe(time.perf_counter() - start)

    def _predict(
        self, batch: np.ndarray, spec: InputSpec, selector: VersionSelector
    ) -> PredictResult:
        result = self._client.predict(
            {spec.name: batch.astype(spec.dtype, copy=False)},
            selector=selector,
            output_filter=list(spec.outputs),
        )
        self._metrics.answered.labels(version=str(result.version)).inc()
        if (
            result.version != spec.version
            and self._info.refresh(selector).has_rule != spec.has_rule
        ):
            # Another version answered and it has (or lacks) the abstain outputs that were not
            # asked for: fail as serving_error, so classify() retries with its signature.
            raise GatewayError(
                ErrorCode.SERVING_ERROR,
                f"version {result.version} answered with a signature other than version "
                f"{spec.version}'s",
            )
        rows = {len(v) for v in result.outputs.values() if np.ndim(v) >= 1}
        if rows != {len(batch)}:
            raise GatewayError(
                ErrorCode.SERVING_ERROR,
                f"Predict returned {sorted(rows)} rows for {len(batch)} images",
            )
        return result

    def _classifications(
        self, outputs: Mapping[str, np.ndarray], top_k: int, has_rule: bool
    ) -> list[Classification]:
        """Model outputs (one row per image) -> classifications, counted by label."""
        try:
            rule = {key: outputs[key] for key in RULE_OUTPUTS} if has_rule else None
            rows = classify_rows(
                outputs[OUTPUT_PROBABILITIES], outputs[OUTPUT_CLASSES], top_k, rule
            )
        except KeyError as exc:
            raise GatewayError(
                ErrorCode.SERVING_ERROR, f"Predict response lacks output {exc}"
            ) from None
        for row in rows:
            self._metrics.images.labels(label=row.label).inc()
        return rows

    def classify(
        self, images: Sequence[bytes], *, top_k: int, selector: VersionSelector = LATEST
    ) -> Answer:
        """Classify encoded images.

        Args:
            images: encoded files, any format ``preprocessing.decode`` reads.
            top_k: top-k list length (capped at the number of classes).
            selector: the model version to ask for.

        Returns:
            The answer; an image that cannot be decoded gets an ``ItemResult.error`` (e.g.
            ``corrupt_image``) and does not stop the others.

        Raises:
            GatewayError: a serving failure (503/504/404/502), which fails the whole request.
        """
        spec = self._info.input_spec(selector)
        try:
            return self._classify(images, spec, top_k, selector)
        except GatewayError as exc:
            if exc.code != ErrorCode.SERVING_ERROR:
                raise
            # Possibly a new version with another input: re-read the signature; retry once if so.
            fresh = self._info.refresh(selector)
            if fresh == spec:
                raise
            return self._classify(images, fresh, top_k, selector)

    def _cache_keys(self, images: Sequence[bytes], spec: InputSpec, version: int) -> list[str]:
        shape = f"{spec.height}x{spec.width}x{spec.channels}:{spec.dtype}"
        return [
            cache_key(self._settings.model_name, version, shape, image_digest(data))
            for data in images
        ]

    def _classify(
        self, images: Sequence[bytes], spec: InputSpec, top_k: int, selector: VersionSelector
    ) -> Answer:
        if self._cache is None:
            answer = self._classify_uncached(images, spec, top_k, selector, {})
            return Answer(answer.model_name, answer.version, answer.items)
        version = self._resolver.resolve(selector)
        if version is None:  # a label, or no version known: straight to the model
            answer = self._classify_uncached(images, spec, top_k, selector, {})
            return Answer(answer.model_name, answer.version, answer.items, cache="miss")
        keys = self._cache_keys(images, spec, version)
        cached = self._cache.get(keys)
        hits = {i: row for i, row in enumerate(cached) if row is not None}
        # Misses go to the version the hits came from, so one version labels the whole answer.
        pinned = VersionSelector(version=version) if hits else selector
        try:
            answer = self._classify_uncached(images, spec, top_k, pinned, hits)
        except GatewayError as exc:
            if not hits or exc.code != ErrorCode.NOT_FOUND:
                raise
            # The cached version went away between the status check and the call.
            answer = self._classify_uncached(images, spec, top_k, selector, {})
            hits = {}
        all_cached = bool(hits) and answer.stored == len(hits)
        return Answer(
            answer.model_name,
            version if all_cached else answer.version,
            answer.items,
            cache="hit" if all_cached else "miss",
        )

    def _classify_uncached(
        self,
        images: Sequence[bytes],
        spec: InputSpec,
        top_k: int,
        selector: VersionSelector,
        hits: Mapping[int, Row],
    ) -> _Partial:
        items: list[ItemResult | None] = [None] * len(images)
        if hits:
            outputs = _stack([hits[i] for i in sorted(hits)])
            has_rule = all(key in outputs for key in RULE_OUTPUTS)
            rows = self._classifications(outputs, top_k, has_rule)
            for i, row in zip(sorted(hits), rows, strict=True):
                items[i] = ItemResult(classification=row)
        todo = [i for i in range(len(images)) if i not in hits]
        # Every image is queued for decoding at once; each chunk is sent as soon as its images are
        # decoded, so the model works on one chunk while the pool decodes the next.
        if len(todo) == 1:
            decoded = {todo[0]: _done(self._decode(images[todo[0]], spec))}
        else:
            # each in a copy of this request's context (a context runs in one thread at a time),
            # so a decode thread's log line carries the request id
            decoded = {
                i: self._pool.submit(contextvars.copy_context().run, self._decode, images[i], spec)
                for i in todo
            }
        model_name, version = self._settings.model_name, None
        indices: list[int] = []
        arrays: list[np.ndarray] = []
        fresh: dict[int, Row] = {}
        parallel = self._settings.predict_parallel_chunks
        sent: list[tuple[list[int], np.ndarray, Future]] = []

        def send(last: bool = False) -> None:
            """Send the chunk being built; with parallel chunks, without waiting for its answer
            (the last chunk is sent from this thread, while the others are in flight)."""
            batch = np.stack(arrays)
            pinned = selector if version is None else VersionSelector(version=version)
            if parallel == 1 or last:
                future = _done(self._predict(batch, spec, pinned))
            else:
                while sum(not f.done() for _, _, f in sent) >= parallel:
                    wait([f for _, _, f in sent if not f.done()], return_when=FIRST_COMPLETED)
                # the request's context travels along: its id goes into the call's metadata
                context = contextvars.copy_context()
                future = self._calls.submit(context.run, self._predict, batch, spec, pinned)
            sent.append((list(indices), batch, future))
            indices.clear()
            arrays.clear()

        def collect(chunk: list[int], batch: np.ndarray, future: Future) -> None:
            """Label a sent chunk's images; the first answer fixes the version of the response."""
            nonlocal model_name, version
            result = future.result()
            if version is None:
                model_name, version = result.model_name or model_name, result.version
                self._info.observe(selector, version)
                if self._resolver is not None:
                    self._resolver.saw(version)
            elif result.version != version:
                # Sent in parallel while versions were swapped: ask the first answer's version.
                result = self._predict(batch, spec, VersionSelector(version=version))
                if result.version != version:
                    raise GatewayError(
                        ErrorCode.SERVING_ERROR,
                        f"version {version} was asked, {result.version} answered",
                    )
            rows = self._classifications(result.outputs, top_k, spec.has_rule)
            for n, (i, row) in enumerate(zip(chunk, rows, strict=True)):
                items[i] = ItemResult(classification=row)
                fresh[i] = {key: value[n] for key, value in result.outputs.items()}

        try:
            for i, future in decoded.items():
                array = future.result()
                if isinstance(array, GatewayError):
                    items[i] = ItemResult(error=array)
                    continue
                indices.append(i)
                arrays.append(array)
                if len(indices) == self._settings.predict_chunk_size:
                    send()
                    if parallel == 1:  # answered already: later chunks are pinned to its version
                        collect(*sent.pop())
            if indices:
                send(last=True)
            for entry in sent:
                collect(*entry)
        finally:
            for future in decoded.values():
                future.cancel()
            for _, _, call in sent:
                call.cancel()
        if fresh and self._cache is not None:
            keys = self._cache_keys([images[i] for i in fresh], spec, version)
            self._cache.put(dict(zip(keys, fresh.values(), strict=True)))
        return _Partial(model_name, version, items, stored=len(hits) + len(fresh))

    def labels(self, selector: VersionSelector = LATEST) -> tuple[str, int, list[str]]:
        """The class labels of a version, in class-id order, from one Predict of a zero image.

        Args:
            selector: the version to ask.

        Returns:
            ``(model_name, version, labels)``.

        Raises:
            GatewayError: serving failures; ``serving_error`` if the output is malformed.
        """
        spec = self._info.input_spec(selector)
        zero = np.zeros((1, spec.height, spec.width, spec.channels), dtype=spec.dtype)
        result = self._client.predict(
            {spec.name: zero}, selector=selector, output_filter=[OUTPUT_CLASSES]
        )
        self._info.observe(selector, result.version)
        if self._resolver is not None:
            self._resolver.saw(result.version)
        classes = result.outputs.get(OUTPUT_CLASSES)
        if classes is None or classes.ndim != 2 or classes.shape[0] != 1:
            raise GatewayError(
                ErrorCode.SERVING_ERROR, "Predict returned no [1, num_classes] classes"
            )
        return result.model_name, result.version, [_text(v) for v in classes[0]]
