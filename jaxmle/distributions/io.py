"""Reading one numeric column from CSV or whitespace-separated text (for ``jaxmle fit``).

No pandas: the ``csv`` module and numpy. The file is opened read-only and
never written. Every problem is an :class:`InputError` with a one-line message.

Format: the delimiter is the first of ``,``, tab and ``;`` that occurs on the
first non-blank line and on at least half of the first 20, else runs of
whitespace. Every row must have as many fields as the header (or, without
one, the first row): a ragged row is an error naming its line and field count
(extra empty trailing fields are allowed). Lines
starting with ``#`` are comments. The first row is a header when one of its
cells is neither a number nor a missing-value token. Blank lines between data
rows are rows whose cells are all missing; blank lines before the first and
after the last row are ignored. Missing-value tokens (case-insensitive): an
empty cell, ``NA``, ``NaN``, ``N/A``, ``null``, ``None``. Row numbers in
messages are line numbers of the file (1-based, as an editor shows them).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import sys

import numpy as np

MISSING = frozenset({"", "na", "nan", "n/a", "null", "none"})
_SAMPLE_LINES = 20
_SHOW = 5


class InputError(Exception):
    """Bad input for the command line: the message is printed as one line."""


@dataclasses.dataclass(frozen=True)
class Column:
    """The numeric values of one column and what was dropped."""

    values: np.ndarray
    label: str
    missing_lines: tuple[int, ...]


def read_text(path: str) -> str:
    """The whole text of ``path`` (``-``: standard input)."""
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:  # read-only
            return fh.read()
    except FileNotFoundError:
        raise InputError(f"cannot read {path!r}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"cannot read {path!r}: it is a directory") from None
    except PermissionError:
        raise InputError(f"cannot read {path!r}: permission denied") from None
    except UnicodeDecodeError:
        raise InputError(f"cannot read {path!r}: not a UTF-8 text file") from None
    except OSError as err:
        raise InputError(f"cannot read {path!r}: {err.strerror or err}") from None


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _delimiter(lines: list[str]) -> str | None:
    sample = [ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")][:_SAMPLE_LINES]
    for delim in (",", "\t", ";"):
        # on the first line and on most others: a ragged row ("7" in a CSV file) is not
        # a reason to read the file as whitespace-separated (it is reported as ragged)
        if sample and delim in sample[0] and 2 * sum(delim in ln for ln in sample) >= len(sample):
            return delim
    return None


def _fields(n: int) -> str:
    return f"{n} field{'' if n == 1 else 's'}"


def check_ragged(rows: list[tuple[int, list[str]]], header: list[str] | None) -> None:
    """Every non-blank row has the header's number of fields (without a header, the first
    row's); extra fields that are empty are allowed (a trailing delimiter)."""
    if not rows:
        return
    width = len(header) if header is not None else len(rows[0][1])
    ref = "the header has" if header is not None else f"line {rows[0][0]} has"
    ragged = [(line, len(cells)) for line, cells in rows if any(cells)
              and (len(cells) < width or any(cells[width:]))]
    if ragged:
        (line, n), more = ragged[0], [r[0] for r in ragged[1:]]
        also = f" (also line(s) {_show(more, str)})" if more else ""
        raise InputError(f"line {line} has {_fields(n)}, {ref} {width}{also}: every row needs one "
                         "field per column (write a missing value as an empty field or NA)")


def split_rows(text: str) -> list[tuple[int, list[str]]]:
    """``(line number, cells)`` for every row, comments dropped, blank lines inside kept."""
    lines = text.splitlines()
    delim = _delimiter(lines)
    if delim is None:
        rows = [(i + 1, ln.split()) for i, ln in enumerate(lines)]
    else:
        reader = csv.reader(io.StringIO(text), delimiter=delim)
        rows = []
        try:
            for cells in reader:
                rows.append((reader.line_num, cells))
        except csv.Error as err:
            raise InputError(f"malformed CSV at line {reader.line_num}: {err}") from None
    rows = [(n, [c.strip() for c in cells]) for n, cells in rows
            if not (cells and cells[0].lstrip().startswith("#"))]
    filled = [i for i, (_, cells) in enumerate(rows) if any(cells)]
    return rows[filled[0]:filled[-1] + 1] if filled else []


def _has_header(cells: list[str]) -> bool:
    return any(c.lower() not in MISSING and not _is_number(c) for c in cells)


def _choose(column: str | None, header: list[str] | None, width: int) -> tuple[int, str]:
    """Index and label of the requested column (by name, or a 0-based index)."""
    names = header or [str(i) for i in range(width)]
    listing = ", ".join(repr(n) for n in names)
    if column is None:
        if width == 1:
            return 0, names[0]
        raise InputError(f"the data have {width} columns ({listing}); choose one with --column")
    if header is not None:
        if column in header:
            return header.index(column), column
        folded = [i for i, h in enumerate(header) if h.lower() == column.lower()]
        if len(folded) == 1:
            return folded[0], header[folded[0]]
    try:
        index = int(column)
    except ValueError:
        where = f"the columns are {listing}" if header else "the data have no header row: use a 0-based column index"
        raise InputError(f"unknown column {column!r}: {where}") from None
    if not 0 <= index < width:
        raise InputError(f"column index {index} is out of range: the data have {width} column(s), "
                         f"0 to {width - 1}")
    return index, names[index]


def _show(items: list, fmt) -> str:
    more = ", …" if len(items) > _SHOW else ""
    return ", ".join(fmt(i) for i in items[:_SHOW]) + more


def read_column(path: str, column: str | None = None, strict: bool = False) -> Column:
    """Parse ``path`` and return the finite numbers of one column (missing cells dropped)."""
    rows = split_rows(read_text(path))
    source = "standard input" if path == "-" else repr(path)
    if not rows:
        raise InputError(f"{source} contains no data")
    header = rows[0][1] if _has_header(rows[0][1]) else None
    body = rows[1:] if header is not None else rows
    check_ragged(body, header)
    width = max([len(header or [])] + [len(cells) for _, cells in body])
    index, label = _choose(column, header, width)
    values, missing, bad, infinite = [], [], [], []
    for line, cells in body:
        cell = cells[index] if index < len(cells) else ""
        if cell.lower() in MISSING:
            missing.append(line)
            continue
        try:
            v = float(cell)
        except ValueError:
            bad.append((line, cell))
            continue
        (values if math.isfinite(v) else infinite).append(v if math.isfinite(v) else line)
    name = f"column {label!r}"
    if bad:
        raise InputError(f"{name} has {len(bad)} non-numeric value(s): "
                         + _show(bad, lambda b: f"line {b[0]} {b[1]!r}"))
    if infinite:
        raise InputError(f"{name} has {len(infinite)} infinite value(s) at line(s) "
                         + _show(infinite, str))
    if missing and strict:
        raise InputError(f"{name} has {len(missing)} missing value(s) at line(s) "
                         f"{_show(missing, str)} (--strict); remove them or run without --strict "
                         "to drop them")
    if not values:
        raise InputError(f"{name} has no numeric values"
                         + (f" ({len(missing)} missing)" if missing else ""))
    return Column(np.asarray(values, dtype=float), label, tuple(missing))
