"""A Predict request checked against its signature: the unit batching merges and servables run.

Pure data (NumPy only), so the batching code and its tests do not load TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PreparedCall:
    """A request checked against a signature, ready to run (possibly merged with others).

    Attributes:
        signature_name: the resolved signature key.
        inputs: input alias -> array, in the signature's dtype; dimension 0 is the batch.
        outputs: output aliases to return, in the order the caller asked (all when unfiltered).
    """

    signature_name: str
    inputs: dict[str, np.ndarray]
    outputs: tuple[str, ...]

    @property
    def batch_size(self) -> int:
        """Rows in dimension 0 of the first input (0 for scalar inputs)."""
        first = next(iter(self.inputs.values()), None)
        return int(first.shape[0]) if first is not None and first.ndim else 0
