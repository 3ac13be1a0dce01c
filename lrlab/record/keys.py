"""How values are spelled for MLflow: dotted keys, and names within MLflow's length limit."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

MAX_NAME = 250  # MLflow's limit for keys and for the run-name column


def shorten(name: str, limit: int = MAX_NAME) -> str:
    """``name`` if it fits, else its start, '…' and a digest of the whole: still unique, still readable."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[: limit - len(digest) - 2]}…{digest}"


MAX_PARAM_VALUE = 6000  # mlflow.utils.validation.MAX_PARAM_VAL_LENGTH: MLflow cuts a longer param value silently


def param_artifact(key: str) -> str:
    """Where a param value too long for MLflow is kept whole."""
    return f"params/{key}.txt"


def param_pointer(key: str, value: str) -> str:
    """What the param holds instead of a value too long for MLflow: its digest and the artifact with it whole."""
    return f"sha256:{hashlib.sha256(value.encode()).hexdigest()[:16]} {param_artifact(key)}"


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Leaves of a nested mapping as dotted keys; lists stay whole (``dataset.true_w``)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat
