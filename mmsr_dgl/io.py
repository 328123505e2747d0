"""The file system as every command that writes uses it: a folder is claimed (locked, and only ever written when
new, empty or provably written by the same command), files are written then renamed, so that a failed, killed or
concurrent command never destroys earlier output or anything of the user's.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import yaml

from .errors import UserError

# The folders mmsr-dgl writes, each known by a marker file: kind -> (file, its "kind" value; None: a run's
# config.yaml, known by its keys)
FOLDER_KINDS = {
    "dataset": ("manifest.json", "mmsr-dgl dataset"),
    "encode": ("encode.json", "mmsr-dgl encode"),
    "encode (interrupted)": (".partial/settings.json", "mmsr-dgl encode"),
    "inspect": ("inspect.json", "mmsr-dgl inspect"),
    "run": ("config.yaml", None),
}
WRITER = {"dataset": "preprocess", "encode": "encode", "inspect": "inspect", "run": "train"}
RUN_KEYS = {"data", "data_fingerprint", "config"}
RUN_OWN_FILES = {"config.yaml", "best.pt", "last.pt", "metrics.jsonl", "results.json", "train.log"}


def read_json(path: Path) -> Any | None:
    """The JSON value in `path`, or None when it is missing or not JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_kind(path: Path) -> str | None:
    """Which kind of mmsr-dgl folder `path` is (a key of FOLDER_KINDS; "encode (interrupted)" counts as "encode"),
    or None."""
    for kind, (marker, value) in FOLDER_KINDS.items():
        file = Path(path) / marker
        if not file.is_file():
            continue
        if value is None:
            try:
                payload = yaml.safe_load(file.read_text())
            except (OSError, UnicodeDecodeError, yaml.YAMLError):
                continue
            if isinstance(payload, dict) and RUN_KEYS <= set(payload) and isinstance(payload["config"], dict):
                return kind
        else:
            payload = read_json(file)
            if isinstance(payload, dict) and payload.get("kind") == value:
                return kind.split(" ")[0]
    return None


def _exists(path: Path, option: str) -> bool:
    try:
        return path.exists()
    except OSError as err:  # a symbolic-link loop, a name too long
        raise UserError(f"{path}: {err.strerror} ({option})") from None


def _owner(path: Path, allowed: Path | None) -> tuple[Path, str] | None:
    """The nearest folder above `path` that mmsr-dgl wrote (and its kind), other than `allowed`."""
    for parent in Path(os.path.abspath(path)).parents:
        kind = folder_kind(parent)
        if kind and not (allowed is not None and parent == Path(os.path.abspath(allowed))):
            return parent, kind
    return None


def check_output_file(path: Path, option: str, inputs: tuple[Path, ...] = ()) -> None:
    """Refuse an output file that is not a new or regular file, is one of `inputs`, or is a file of a folder
    mmsr-dgl wrote (a run, dataset, encode or inspect output: writing it would damage that folder)."""
    path = Path(path)
    if not str(path) or path.name in ("", ".", ".."):
        raise UserError(f"{option} {str(path)!r}: not a file name")
    if _exists(path, option) or path.is_symlink():
        if path.is_dir() and not path.is_symlink():
            raise UserError(f"{path}: is a directory ({option}); name the file to write")
        if path.is_symlink() or not path.is_file():
            raise UserError(f"{path}: exists and is not a regular file ({option}); choose another path")
        if any(path.samefile(p) for p in inputs if p.exists()):
            raise UserError(f"{path}: is an input of this command ({option}); choose another path")
    owner = _owner(path, None)
    if owner and (owner[1] != "run" or path.name in RUN_OWN_FILES or path.parent != owner[0]):
        raise UserError(
            f"{path}: inside the {owner[1]} folder {owner[0]}, which this command did not write "
            f"({option}); choose a path outside it"
        )


@contextlib.contextmanager
def claim_dir(
    out: Path, kind: str, option: str = "--out", inside: Path | None = None, wait: bool = False
) -> Iterator[bool]:
    """Hold the folder `out` for a command that writes folders of `kind` (a key of FOLDER_KINDS) until the block
    ends; yields whether it holds an earlier output of that kind. `wait`: wait for another holder to end instead
    of refusing.

    Refused: a path that is not a folder, a folder another command holds (a lock that the system releases when the
    holder dies, even by kill -9), a folder holding anything but an output of `kind`, and a folder inside another
    mmsr-dgl folder (but `inside`, e.g. the run an inspection belongs to). A folder created here and left empty by
    the command (a failure) is removed again."""
    out = Path(out)
    if not str(out) or str(out) == ".":
        raise UserError(f"{option} {str(out)!r}: give a folder of its own")
    owner = _owner(out, inside)
    if owner:
        raise UserError(f"{out}: inside the {owner[1]} folder {owner[0]}; choose an {option} outside it")
    created = not _exists(out, option)
    if not created and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder ({option}); choose another")
    if out.is_symlink() and not out.exists():
        raise UserError(f"{out}: a symbolic link that leads nowhere (a loop, or its target is gone) ({option})")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a symbolic-link loop above it, a file where a folder should be
        raise UserError(f"{out}: cannot be made a folder ({err.strerror}) ({option})") from None
    fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            raise UserError(
                f"{out}: another mmsr-dgl command is writing there now; wait until it ends or choose another {option}"
            ) from None
        found = folder_kind(out)
        if found not in (None, kind):
            raise UserError(f"{out}: is a {found} folder, not a {kind} folder; choose another {option}")
        names = sorted(p.name for p in out.iterdir())
        if found is None and names:
            raise UserError(
                f"{out}: holds files that {WRITER[kind]} did not write ({', '.join(names[:5])}"
                f"{', ...' if len(names) > 5 else ''}); choose another {option}"
            )
        try:
            yield found == kind
        finally:
            if created and out.is_dir() and not any(out.iterdir()):
                out.rmdir()
    finally:
        os.close(fd)  # releases the lock


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_replaceable(out: Path, ours: set[str], writer: str = "preprocess") -> None:
    """Refuse to replace a folder holding more than the files `ours` (a claimed folder, see `claim_dir`)."""
    if not out.exists():
        return
    foreign = sorted(p.name for p in out.iterdir() if p.name not in ours or not p.is_file())
    if foreign:
        raise UserError(
            f"{out}: also holds files that {writer} did not write ({', '.join(foreign)}); move them or "
            f"choose another --out"
        )


def _alive(pid: int) -> bool:
    if pid == os.getpid():  # a leftover of an earlier process that had our PID (a container's PID 1)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _leftovers(out: Path, kind: str) -> list[Path]:
    """Our temporary directories beside `out` (`.NAME.tmp-PID-*`, `.NAME.old-PID-*`) whose process is gone."""
    found = []
    for path in out.parent.glob(f".{out.name}.{kind}-*-*"):
        pid = path.name[len(f".{out.name}.{kind}-") :].split("-", 1)[0]
        if pid.isdigit() and path.is_dir() and not _alive(int(pid)):
            found.append(path)
    return found


def recover(out: Path) -> None:
    """Undo what a killed `replace_directory` left: the earlier output put back if it was moved aside and not
    replaced, then the dead processes' temporary directories removed."""
    for old in _leftovers(out, "old"):
        if not out.exists():
            old.rename(out)
        else:
            shutil.rmtree(old, ignore_errors=True)
    for tmp in _leftovers(out, "tmp"):
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def replace_directory(out: Path, ours: set[str]):
    """Yield a fresh temporary directory beside `out`; on success it replaces `out`, on failure it is removed.

    Only a directory that is provably ours is replaced: empty, or holding our manifest and no entries but the
    file names in `ours`. A kill at any step leaves either the old or the new output in place (see `recover`).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    recover(out)
    check_replaceable(out, ours)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the output should be like any new directory
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    check_replaceable(out, ours)  # nothing appeared in it meanwhile
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-{os.getpid()}-", dir=out.parent))
        out.rename(old)  # onto the empty directory just made
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_file_atomic(path: Path, write) -> None:
    """Call `write(tmp_path)`, then rename the result onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; the result should be like any new file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
