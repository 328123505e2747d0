"""Write-then-rename helpers so a failed or killed run never destroys earlier good output or anything else."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import UserError

MARKER = "manifest.json"
KIND = "mmsr-dgl dataset"  # the manifest's "kind": what makes a directory provably ours


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def is_dataset_dir(path: Path) -> bool:
    """Whether `path` holds a dataset that `preprocess` wrote (its manifest says so)."""
    try:
        return json.loads((Path(path) / MARKER).read_text()).get("kind") == KIND
    except (OSError, ValueError, AttributeError):
        return False


def check_replaceable(out: Path, ours: set[str]) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory; choose another --out")
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return
    if not is_dataset_dir(out):
        raise UserError(f"{out}: exists and is not an mmsr-dgl dataset (no manifest of ours); choose another --out")
    foreign = [name for name in entries if name not in ours or not (out / name).is_file()]
    if foreign:
        raise UserError(f"{out}: also holds files that preprocess did not write ({', '.join(foreign)}); move them "
                        f"or choose another --out")


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
        pid = path.name[len(f".{out.name}.{kind}-"):].split("-", 1)[0]
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
