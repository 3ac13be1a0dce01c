"""A table of the user's own data (``dataset=csv``): a CSV file read with the stdlib, checked, and its digest.

The file has a header row of column names. ``dataset.target`` is the label column; ``dataset.features`` the
feature columns (null: every numeric column but the target, in the file's order). A column is numeric when every
one of its cells is a finite number. Every problem with the file is a ``TableError`` naming the key it is about
(the config reports it as a ``ConfigError``): the path (no such file, no header, no rows, ragged rows), the target
or the features (no such column, a cell that is not a number, no feature column at all).

No torch here: the config's validation reads the table, so that bad data is refused before any run exists, and a
refusal must not wait for torch to load. Step 1 (``pipeline.generate_dataset``) turns the table into tensors.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

MAX_LISTED = 20  # column names an error lists before it cuts the list short


class TableError(ValueError):
    """A problem with the table, in one line that names its key (``dataset.path``, ``target``, ``features``)."""


@dataclass(frozen=True, eq=False)
class Table:
    """The columns a run uses, read from one CSV file. Values are float64, as the file's decimals parse."""

    path: str  # absolute
    sha256: str  # of the file's bytes: the table's identity, wherever the file lies and whatever its mtime
    columns: tuple[str, ...]  # every column of the file, in its order
    numeric: tuple[bool, ...]  # whether each of ``columns`` holds only finite numbers
    target: str  # the label column
    features: tuple[str, ...]  # the feature columns
    feature_values: array  # (n·d,) row-major: row i's features are [i·d, (i+1)·d)
    labels: array  # (n,)

    @property
    def num_examples(self) -> int:
        return len(self.labels)


def read_table(path: str, target: str, features: list[str] | None) -> Table:
    """The table at ``path`` (absolute, or relative to the current folder) with ``target`` and ``features``
    checked and read; a ``TableError`` naming the key otherwise."""
    file = Path(path)
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        _refuse("dataset.path", path, "a CSV file (no such file; a relative path is read from where lrlab started)")
    except IsADirectoryError:
        _refuse("dataset.path", path, "a CSV file, not a folder")
    except OSError as error:
        _refuse("dataset.path", path, f"a readable CSV file ({error.strerror or error})")
    digest = hashlib.sha256(raw).hexdigest()
    key = (str(file.absolute()), digest, target, None if features is None else tuple(features))
    if key not in _LAST:  # a sweep validates every job: the same bytes are parsed once
        _LAST.clear()
        _LAST[key] = _parse(file, raw, digest, target, features)
    return _LAST[key]


# The last table parsed, by its file, content and selection: a sweep's jobs and a run's steps read one file many
# times (validation, identity, the record, step 1). Keyed by the digest, so a changed file is parsed again.
_LAST: dict[tuple[str, str, str, tuple[str, ...] | None], Table] = {}


def _refuse(key: str, value: object, allowed: str) -> NoReturn:
    raise TableError(f"{key}={value!r} is not allowed: {key} must be {allowed}")


def _listing(names: tuple[str, ...] | list[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f", … ({len(names)} in all)" if len(names) > MAX_LISTED else "")


def _number(cell: str) -> float | None:
    """The cell's value if it is a finite number, else None (text, an empty cell, nan, inf)."""
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _parse(file: Path, raw: bytes, digest: str, target: str, features: list[str] | None) -> Table:
    name = file.name
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark (spreadsheets write one) is not part of a name
    except UnicodeDecodeError as error:
        _refuse("dataset.path", str(file), f"a UTF-8 CSV file (byte {error.start} of {name} is not UTF-8)")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None or not any(cell.strip() for cell in header):
        _refuse("dataset.path", str(file), f"a CSV file with a header row of column names ({name} has none)")
    columns = tuple(cell.strip() for cell in header)
    twice = next((column for column in columns if columns.count(column) > 1), None)
    if twice is not None:
        _refuse("dataset.path", str(file), f"a CSV file whose columns have distinct names ({name} has {twice!r} twice)")
    rows: list[tuple[int, list[str]]] = []
    for row in reader:
        if not row or (len(row) == 1 and not row[0].strip()):  # a blank line
            continue
        if len(row) != len(columns):
            _refuse(
                "dataset.path",
                str(file),
                f"a CSV file whose rows have one cell per column ({name} line {reader.line_num} has {len(row)} "
                f"cells for {len(columns)} columns)",
            )
        rows.append((reader.line_num, row))
    if not rows:
        _refuse("dataset.path", str(file), f"a CSV file with at least one row of data ({name} has only its header)")
    numeric = tuple(all(_number(row[j]) is not None for _, row in rows) for j in range(len(columns)))
    if target not in columns:
        _refuse("dataset.target", target, f"a column of {name} (no such column; columns: {_listing(columns)})")
    chosen = _features(name, columns, numeric, target, features)
    for key, used in (("dataset.target", (target,)), ("dataset.features", chosen)):
        for column in used:
            j = columns.index(column)
            if not numeric[j]:
                line, row = next((line, row) for line, row in rows if _number(row[j]) is None)
                value, kind = (target, "a numeric column") if key == "dataset.target" else (features, "numeric columns")
                _refuse(key, value, f"{kind} (column {column!r} of {name} has {row[j]!r} on line {line})")
    indices = [columns.index(column) for column in chosen]
    labels = array("d", (float(row[columns.index(target)]) for _, row in rows))
    values = array("d", (float(row[j]) for _, row in rows for j in indices))
    return Table(str(file.absolute()), digest, columns, numeric, target, chosen, values, labels)


def _features(
    name: str, columns: tuple[str, ...], numeric: tuple[bool, ...], target: str, features: list[str] | None
) -> tuple[str, ...]:
    """The feature columns: ``features`` checked, or every numeric column but the target."""
    if features is None:
        chosen = tuple(c for c, number in zip(columns, numeric, strict=True) if number and c != target)
        if not chosen:
            _refuse(
                "dataset.features",
                None,
                f"a list of feature columns: {name} has no numeric column besides dataset.target={target!r} "
                f"(columns: {_listing(columns)})",
            )
        return chosen
    if not features:
        _refuse("dataset.features", features, "a non-empty list of columns, or null for every numeric column")
    for column in features:
        if column not in columns:
            _refuse(
                "dataset.features",
                features,
                f"columns of {name} ({column!r}: no such column; columns: {_listing(columns)})",
            )
        if column == target:
            _refuse("dataset.features", features, f"columns other than dataset.target={target!r}")
    twice = next((column for column in features if features.count(column) > 1), None)
    if twice is not None:
        _refuse("dataset.features", features, f"distinct columns ({twice!r} is listed twice)")
    return tuple(features)
