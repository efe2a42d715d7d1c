"""How stored embedding values turn back into vectors: dequantisation tables and no data.

AEF stores int8 with the "signed_square" quantisation: value = sign(q) * (q / 127.5)^2,
and q = -128 marks no data in every band. Float stores carry their values as they are
and mark no data with NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import StoreError

SIGNED_SQUARE = "signed_square"
NO_QUANTISATION = "none"
KNOWN_METHODS = (SIGNED_SQUARE, NO_QUANTISATION)


@dataclass(frozen=True)
class Quantisation:
    """The store's quantisation method and its no-data value (None for floats: NaN marks it)."""

    method: str
    nodata: int | None

    @classmethod
    def from_attrs(cls, attrs: dict, dtype: np.dtype) -> Quantisation:
        """Read `geoemb:quantization` (AEF) or fall back to 'none' for unquantised stores."""
        spec = attrs.get("geoemb:quantization") or {}
        method = spec.get("method", NO_QUANTISATION) if isinstance(spec, dict) else str(spec)
        if method not in KNOWN_METHODS:
            raise StoreError(
                f"The store's quantisation {method!r} is not supported; "
                f"supported: {', '.join(KNOWN_METHODS)}."
            )
        dtype = np.dtype(dtype)
        if method == SIGNED_SQUARE and dtype != np.int8:
            raise StoreError(
                f"signed_square quantisation needs int8 values, the store holds {dtype}."
            )
        if dtype.kind in "iu":
            nodata = spec.get("nodata") if isinstance(spec, dict) else None
            if nodata is None:
                nodata = int(np.iinfo(dtype).min) if dtype.kind == "i" else None
            return cls(method, nodata)
        return cls(method, None)
