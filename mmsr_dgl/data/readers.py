"""Readers for the input formats documented in datasets/README.md. Every error names the file and line or field."""

from __future__ import annotations

import csv
import functools
import html
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError


@dataclass
class ItemTable:
    """The optional items file: raw ids in file order, optional ASINs, per-modality availability flags."""

    ids: list[str]
    asin: list[str] | None = None
    has: dict[str, np.ndarray] = field(default_factory=dict)  # modality -> bool [n_rows]
    ignored: list[str] = field(default_factory=list)  # columns the preprocessing does not read


@dataclass
class RawData:
    """What the readers (or the synthetic generator) hand to the preprocessing pipeline."""

    users: list[str]  # raw user ids, one per history
    histories: list[list[str]]  # raw item ids in chronological order
    items: ItemTable | None = None
    features: dict[str, np.ndarray] = field(default_factory=dict)  # modality -> float32 [n_rows, dim]
    feature_ids: list[str] | None = None  # raw item id of each feature row
    origin: list[str] | None = None  # where each history comes from ("FILE, line N"), for error messages


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise UserError(
            f"{path}: " + ("not a regular file (a folder, FIFO or device)" if path.exists() else "file not found")
        )


def _text_file(reader):
    """A decoding error anywhere in `reader(path, ...)` becomes a UserError naming the file."""

    @functools.wraps(reader)
    def wrapped(path, *args, **kwargs):
        try:
            return reader(path, *args, **kwargs)
        except UnicodeDecodeError as err:
            raise UserError(f"{path}: not a UTF-8 text file ({err.reason})") from None

    return wrapped


def integer_id(token: str) -> str:
    """The canonical form of an integer id: `007` and `7` are one id."""
    return (token.lstrip("0") or "0") if token.isascii() and token.isdigit() else token


@_text_file
def read_sequences(path: str | Path) -> RawData:
    """`user item item ...` per line, integer ids (`007` is `7`), items in chronological order."""
    path = Path(path)
    _check_file(path)
    users, histories, origin, seen = [], [], [], set()
    with path.open(encoding="utf-8-sig") as handle:
        for line_no, line in enumerate(handle, 1):
            tokens = line.split()
            if not tokens:
                continue
            if len(tokens) < 2:
                raise UserError(f"{path}, line {line_no}: expected 'user item item ...', got {line.strip()!r}")
            for token in tokens:
                if not (token.isascii() and token.isdigit()):
                    raise UserError(f"{path}, line {line_no}: id {token!r} is not a non-negative integer")
            tokens = [integer_id(token) for token in tokens]
            if tokens[0] in seen:
                raise UserError(f"{path}, line {line_no}: user {tokens[0]} appears on more than one line")
            seen.add(tokens[0])
            users.append(tokens[0])
            histories.append(tokens[1:])
            origin.append(f"{path}, line {line_no}")
    if not users:
        raise UserError(f"{path}: no user histories in the file")
    return RawData(users=users, histories=histories, origin=origin)


def _check_ids(path: Path, line_no: int, user: str, item: str) -> None:
    if not user.strip() or not item.strip():
        raise UserError(f"{path}, line {line_no}: empty user or item id")
    if any(not c.isprintable() for c in user + item):  # a tab or line break would break every TSV written later
        raise UserError(
            f"{path}, line {line_no}: a user or item id holds a tab, line break or other control "
            f"character ({user!r}, {item!r})"
        )


def _read_recbole_inter(path: Path, header: list[str], rows) -> tuple[list, list, list, list]:
    names = [h.split(":", 1)[0] for h in header]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UserError(f"{path}, line 1: the header names {', '.join(map(repr, twice))} more than once")
    for required in ("user_id", "item_id"):
        if required not in names:
            raise UserError(f"{path}, line 1: header has no '{required}' column (found {', '.join(names)})")
    u_col, i_col = names.index("user_id"), names.index("item_id")
    t_col = names.index("timestamp") if "timestamp" in names else None
    users, items, times, lines = [], [], [], []
    for line_no, row in rows:
        if len(row) != len(names):
            raise UserError(f"{path}, line {line_no}: expected {len(names)} tab-separated fields, got {len(row)}")
        _check_ids(path, line_no, row[u_col], row[i_col])
        users.append(row[u_col])
        items.append(row[i_col])
        times.append(_parse_time(path, line_no, row[t_col]) if t_col is not None else 0.0)
        lines.append(line_no)
    return users, items, times, lines


def _parse_time(path: Path, line_no: int, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{path}, line {line_no}: timestamp {text!r} is not a number") from None
    if not np.isfinite(value):
        raise UserError(f"{path}, line {line_no}: timestamp {text!r} is not finite")
    return value


@_text_file
def read_interactions(path: str | Path) -> RawData:
    """A RecBole `.inter` TSV (`name:type` header) or the raw Amazon ratings CSV (user,item,rating,timestamp)."""
    path = Path(path)
    _check_file(path)
    with path.open(newline="", encoding="utf-8-sig") as handle:
        first = handle.readline()
        handle.seek(0)
        if "\t" in first and ":" not in first and "," not in first:
            raise UserError(
                f"{path}, line 1: tab-separated, but not a RecBole .inter header: it names each column "
                f"as name:type (user_id:token, item_id:token, timestamp:float)"
            )
        if "\t" in first and ":" in first:
            reader = csv.reader(handle, delimiter="\t")
            header = next(reader)
            rows = ((n, r) for n, r in enumerate(reader, 2) if r)
            users, items, times, lines = _read_recbole_inter(path, header, rows)
        else:
            users, items, times, lines = [], [], [], []
            for line_no, row in enumerate(csv.reader(handle), 1):
                if not row:
                    continue
                if len(row) != 4:
                    raise UserError(
                        f"{path}, line {line_no}: expected 'user,item,rating,timestamp', got {len(row)} fields"
                    )
                _check_ids(path, line_no, row[0], row[1])
                users.append(row[0])
                items.append(row[1])
                times.append(_parse_time(path, line_no, row[3]))
                lines.append(line_no)
    if not users:
        raise UserError(f"{path}: no interactions in the file")
    order = np.argsort(np.asarray(times), kind="stable")  # ties keep file order
    by_user: dict[str, list[str]] = {}
    for index in order:
        by_user.setdefault(users[index], []).append(items[index])
    first_line = {}
    for user, line_no in zip(users, lines):
        first_line.setdefault(user, line_no)
    return RawData(
        users=list(first_line),
        histories=[by_user[u] for u in first_line],
        origin=[f"{path}, user {u} (first at line {n})" for u, n in first_line.items()],
    )


@dataclass
class ItemsFile:
    """The items file: its header and rows kept whole (`encode` writes them back with `has_` flags), the ids, the
    asins and, once chosen, the text column."""

    path: Path
    header: list[str]
    rows: list[list[str]]
    line_numbers: list[int]
    ids: list[str]
    asins: list[str] | None
    text_column: int | None = None  # the index of the text column, once chosen

    def text(self, row: int) -> tuple[str | None, str]:
        """The row's text (HTML entities decoded), or None and why it cannot be encoded."""
        raw = self.rows[row][self.text_column].strip()
        if any("\udc80" <= ch <= "\udcff" for ch in raw):
            return None, f"text is not UTF-8 ({self.path}, line {self.line_numbers[row]})"
        text = html.unescape(raw).strip()
        return (text, "") if text else (None, "empty text")


def read_items_file(path: Path) -> ItemsFile:
    """Tab-separated with a header naming `item_id`. Bytes that are not UTF-8 are kept as escapes: an item's text
    that has some is then skipped, not the file."""
    _check_file(path)
    csv.field_size_limit(1 << 24)
    with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header and not all(name.isprintable() for name in header):
            raise UserError(f"{path}, line 1: the header is not UTF-8 text")
        if not header or "item_id" not in header:
            raise UserError(f"{path}, line 1: header must name an 'item_id' column")
        id_col, rows, lines, seen = header.index("item_id"), [], [], set()
        for line_no, row in enumerate(reader, 2):
            if not row:
                continue
            if len(row) != len(header):
                raise UserError(f"{path}, line {line_no}: expected {len(header)} tab-separated fields, got {len(row)}")
            item = row[id_col].strip()
            if not item or item in seen or not item.isprintable():
                raise UserError(f"{path}, line {line_no}: item_id {item!r} is empty, repeated or not UTF-8")
            seen.add(item)
            rows.append(row)
            lines.append(line_no)
    if not rows:
        raise UserError(f"{path}: no items in the file")
    asins = [row[header.index("asin")] for row in rows] if "asin" in header else None
    return ItemsFile(path, header, rows, lines, [row[id_col].strip() for row in rows], asins)


def read_items(path: str | Path) -> ItemTable:
    """The items file as preprocessing reads it: `item_id` required, `asin` and `has_<modality>` (0/1) optional;
    other columns are ignored (and named)."""
    items = read_items_file(Path(path))
    header = items.header
    asin_col = header.index("asin") if "asin" in header else None
    has_cols = {h[len("has_") :]: i for i, h in enumerate(header) if h.startswith("has_")}
    asin_line: dict[str, int] = {}
    for row, line_no in zip(items.rows, items.line_numbers):
        if asin_col is not None and not row[asin_col].isprintable():
            raise UserError(f"{path}, line {line_no}: asin {row[asin_col]!r} is not printable UTF-8")
        if asin_col is not None and row[asin_col].strip():
            earlier = asin_line.setdefault(row[asin_col].strip(), line_no)
            if earlier != line_no:
                raise UserError(f"{path}, line {line_no}: asin {row[asin_col]!r} is also the asin of line {earlier}")
        for modality, col in has_cols.items():
            if row[col] not in ("0", "1"):
                raise UserError(f"{path}, line {line_no}: has_{modality} must be 0 or 1, got {row[col]!r}")
    ignored = [h for i, h in enumerate(header) if h != "item_id" and i != asin_col and i not in has_cols.values()]
    has = {m: np.asarray([row[c] == "1" for row in items.rows], dtype=bool) for m, c in has_cols.items()}
    return ItemTable(ids=items.ids, asin=items.asins, has=has, ignored=ignored)


def read_features(path: str | Path, modality: str, n_rows: int | None) -> np.ndarray:
    """A float matrix `.npy`; rows that are all zero or all NaN mean 'no such modality' for that item."""
    path = Path(path)
    _check_file(path)
    try:
        # the header first, mapped: a size the file cannot back fails before anything is read
        matrix = np.load(path, allow_pickle=False, mmap_mode="r")
    except (ValueError, OSError, EOFError) as err:
        raise UserError(f"{path}: not a readable .npy array, or shorter than its header says ({err})") from None
    if isinstance(matrix, np.ndarray) and np.iscomplexobj(matrix):
        raise UserError(f"{path}: complex numbers ({matrix.dtype}); the '{modality}' features must be real")
    if not isinstance(matrix, np.ndarray):
        raise UserError(f"{path}: an .npz archive, not one .npy matrix; save the '{modality}' features with numpy.save")
    if matrix.ndim != 2 or not np.issubdtype(matrix.dtype, np.number):
        raise UserError(
            f"{path}: expected a 2-d numeric matrix for '{modality}', got shape {matrix.shape} of {matrix.dtype}"
        )
    if matrix.shape[1] == 0:
        raise UserError(f"{path}: the '{modality}' matrix has no columns (shape {matrix.shape})")
    if n_rows is not None and matrix.shape[0] != n_rows:
        raise UserError(f"{path}: {matrix.shape[0]} rows for '{modality}', but the items file has {n_rows} items")
    shape, changed = matrix.shape, f"{path}: changed while it was being read; read it again once it is written"
    try:  # read, not copied from the mapping: a file cut short meanwhile is an error here, not a crash (SIGBUS)
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise UserError(f"{changed} ({err})") from None
    if not isinstance(data, np.ndarray) or data.shape != shape:
        raise UserError(changed)
    matrix = data.astype(np.float32, copy=False)
    nan = np.isnan(matrix)
    partial = nan.any(axis=1) & ~nan.all(axis=1)
    if partial.any():
        row = int(np.flatnonzero(partial)[0])
        raise UserError(
            f"{path}: row {row} (0-based) of '{modality}' has NaN values in some columns only "
            "(a row of all NaN or all zeros marks a missing modality)"
        )
    if np.isinf(matrix).any():
        row = int(np.flatnonzero(np.isinf(matrix).any(axis=1))[0])
        raise UserError(f"{path}: row {row} (0-based) of '{modality}' has infinite values")
    return matrix
