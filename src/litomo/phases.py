"""Phase labels of three-phase electrode volumes (SPEC 1): ``0 = pore, 1 = AM, 2 = CBD``.

A mapping like ``pore=0,am=85,cbd=170`` (CLI ``--labels``) says which stored value is which
phase. Everything downstream works on the canonical codes in :data:`PHASE_CODES`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np

from litomo.errors import DataError, LitomoError

PHASES: tuple[str, ...] = ("pore", "am", "cbd")
PHASE_CODES: dict[str, int] = {"pore": 0, "am": 1, "cbd": 2}
DEFAULT_MAPPING: dict[str, int] = dict(PHASE_CODES)
T = TypeVar("T")


def parse_phase_items(text: str, convert: Callable[[str], T], *, option: str, example: str) -> dict[str, T]:
    """Parse ``"phase=value,phase=value"`` (phase names case-insensitive) for a CLI option.

    Errors name ``option`` and show ``example``.

    Examples
    --------
    >>> parse_phase_items("AM=0.6, cbd=0.1", float, option="--expected", example="am=0.6")
    {'am': 0.6, 'cbd': 0.1}
    """
    out: dict[str, T] = {}
    for item in text.split(","):
        if "=" not in item:
            raise LitomoError(f"{option}: expected PHASE=VALUE items like '{example}', got {item!r}")
        name, value = (s.strip().lower() for s in item.split("=", 1))
        if name not in PHASE_CODES:
            raise LitomoError(f"{option}: unknown phase {name!r}; known phases are {', '.join(PHASES)}")
        try:
            out[name] = convert(value)
        except ValueError:
            kind = "an integer" if convert is int else "a number"
            raise LitomoError(f"{option}: value for {name!r} must be {kind}, got {value!r}") from None
    return out


def parse_label_mapping(text: str | None) -> dict[str, int]:
    """Parse ``"pore=0,am=85,cbd=170"`` into ``{"pore": 0, "am": 85, "cbd": 170}``.

    Phases may be omitted (a two-phase volume); unknown phase names are an error.

    Examples
    --------
    >>> parse_label_mapping("pore=0,am=85,cbd=170")
    {'pore': 0, 'am': 85, 'cbd': 170}
    >>> parse_label_mapping(None)
    {'pore': 0, 'am': 1, 'cbd': 2}
    """
    if text is None or not text.strip():
        return dict(DEFAULT_MAPPING)
    mapping = parse_phase_items(text, int, option="--labels", example="pore=0,am=85,cbd=170")
    if len(set(mapping.values())) != len(mapping):
        raise LitomoError(f"--labels: two phases share one value in {text!r}")
    return mapping


def to_canonical(labels: np.ndarray, mapping: dict[str, int] | None = None) -> np.ndarray:
    """Convert stored label values to canonical codes (0 pore, 1 AM, 2 CBD) as uint8.

    Raises :class:`DataError` if the volume holds a value the mapping does not name (for
    example a greyscale volume passed where labels are expected).

    Examples
    --------
    >>> to_canonical(np.array([[[0, 85, 170]]]), {"pore": 0, "am": 85, "cbd": 170}).tolist()
    [[[0, 1, 2]]]
    """
    mapping = DEFAULT_MAPPING if mapping is None else mapping
    labels = np.asarray(labels)
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels)):
            raise DataError("label volume holds non-integer values: is this a greyscale image? "
                            "Segment it first (litomo segment) or pass the label volume.")
    values = np.unique(labels)
    known = set(mapping.values())
    unexpected = [v for v in values.tolist() if v not in known]
    if unexpected:
        shown = ", ".join(str(v) for v in unexpected[:8]) + (" ..." if len(unexpected) > 8 else "")
        hint = " (it looks like a greyscale image)" if len(values) > 16 else ""
        raise DataError(
            f"label volume holds values not in the phase mapping {mapping}: {shown}{hint}. "
            "Pass --labels pore=..,am=..,cbd=.. to say which value is which phase."
        )
    out = np.full(labels.shape, 255, dtype=np.uint8)
    for name, value in mapping.items():
        out[labels == value] = PHASE_CODES[name]
    return out
