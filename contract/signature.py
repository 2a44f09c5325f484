"""Names of the ``serving_default`` signature's tensors and of the abstain rule file.

Shapes and dtypes (docs/CONTRACTS.md §2; ``-1`` = any batch size, ``K`` = number of labels):

========================  =========  ===========  ==============================================
name                      dtype      shape        meaning
========================  =========  ===========  ==============================================
``images`` (input)        uint8      [-1,H,W,3]   RGB pixels 0..255
``probabilities``         float32    [-1,K]       probabilities over the K labels, rows sum to 1
``classes``               string     [-1,K]       the version's labels, repeated per row
``known_probability``     float32    [-1]         probability the photo is one of the K labels
``abstain``               bool       [-1]         true = not sure enough to file the photo
``abstain_reason``        string     [-1]         ``""`` when filed, else one of ABSTAIN_REASONS
========================  =========  ===========  ==============================================

Version 1 of the fashion model has only ``probabilities`` and ``classes``; the last three outputs
exist from version 2 on, when training wrote a rule file (:data:`RULE_FILENAME`).
"""

from __future__ import annotations

from typing import Final

SIGNATURE_NAME: Final = "serving_default"
"""TF Serving's default signature key (``kDefaultServingSignatureDefKey``)."""

INPUT_IMAGES: Final = "images"
"""The one input: uint8 ``[-1, H, W, 3]``."""

OUTPUT_PROBABILITIES: Final = "probabilities"
"""float32 ``[-1, K]``."""

OUTPUT_CLASSES: Final = "classes"
"""string ``[-1, K]``: row ``i`` names the columns of ``probabilities[i]``."""

OUTPUT_KNOWN_PROBABILITY: Final = "known_probability"
"""float32 ``[-1]``: 1.0 when the model has no off-category class."""

OUTPUT_ABSTAIN: Final = "abstain"
"""bool ``[-1]``."""

OUTPUT_ABSTAIN_REASON: Final = "abstain_reason"
"""string ``[-1]``: ``""`` or one of :data:`ABSTAIN_REASONS`."""

RULE_OUTPUTS: Final = (OUTPUT_KNOWN_PROBABILITY, OUTPUT_ABSTAIN, OUTPUT_ABSTAIN_REASON)
"""The outputs a version with an abstain rule adds, each of shape ``[-1]``; all of them or none."""

ABSTAIN_REASON_NOT_A_KNOWN_CATEGORY: Final = "not_a_known_category"
"""The photo is probably none of the labels (checked first)."""

ABSTAIN_REASON_LOW_CONFIDENCE: Final = "low_confidence"
"""The top probability is below the rule's ``min_confidence``."""

ABSTAIN_REASONS: Final = (ABSTAIN_REASON_NOT_A_KNOWN_CATEGORY, ABSTAIN_REASON_LOW_CONFIDENCE)
"""Every non-empty ``abstain_reason``, in the order the rule checks them."""

RULE_FILENAME: Final = "abstain_rule.json"
"""Training writes ``artifacts/abstain_rule.json``; export copies it to ``assets.extra/``."""
