"""Writing a directory a user named (`pull -o`, `tiny-model`, `install`): all or nothing, never over their files.

The new directory is staged beside the target (never inside it) and swapped in with two renames; the old one
is moved aside first and removed last, so a failure at any point leaves the target as it was. Each staging
or moved-aside directory is locked (flock) by the process that made it: the next write to the same place
removes those whose process is gone, and puts back a target that a killed swap had moved aside. Each staging
directory is also noted under `MLC_FARM_CACHE/writing/` while it exists, so that `mlc-farm gc` finds and
removes those of killed writes wherever they were.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from mlc_farm.errors import BadInput

_WRITING, _REPLACED = ".writing-", ".replaced-"


def _lock(path: Path) -> int:
    """An exclusive lock on a directory, held until the returned descriptor is closed (or the process dies)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _abandoned(path: Path) -> bool:
    """A staging or moved-aside directory whose process is gone: nobody holds its lock."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # a live process is writing it
    finally:
        os.close(fd)
    return True


def clean_leftovers(out: Path) -> list[Path]:
    """Remove what killed writes to `out` left beside it; a target moved aside by a killed swap goes back."""
    removed = []
    for path in sorted(out.parent.glob(f".{glob.escape(out.name)}.*-*")):
        kind = _WRITING if _WRITING in path.name else _REPLACED if _REPLACED in path.name else None
        if kind is None or not path.is_dir() or path.is_symlink() or not _abandoned(path):
            continue
        if kind == _REPLACED and not out.exists():
            os.rename(path, out)  # the swap died between its two renames: the old directory is the target again
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _check_target(out: Path, what: str, replace: bool) -> None:
    """BadInput for a target that must not be written: a file or link in the way, the current directory (or
    one holding it), or a non-empty directory without `replace`."""
    shown = str(out)
    target = Path(os.path.abspath(out))
    if target.is_symlink():
        raise BadInput(f"{what} {shown}: is a symbolic link; give the directory it points at, or a new one")
    if target.exists() and not target.is_dir():
        raise BadInput(f"{what} {shown}: a file is in the way; give a directory")
    here = Path.cwd().resolve()
    if target.resolve() == here or target.resolve() in here.parents:
        raise BadInput(
            f"{what} {shown} is the current directory or holds it, which a write cannot replace: give a new "
            f"directory (e.g. {what} ./{target.name or 'out'}-new), or run from elsewhere"
        )
    if target.is_dir() and any(target.iterdir()) and not replace:
        raise BadInput(f"{what} {shown} is not empty: write into a new directory, or add --force to replace it")


def _why_not(target: Path, error: OSError) -> str:
    """What is in the way of a directory at `target`: a file where one of its parents should be a directory, or
    the system's own words."""
    for parent in target.parents:
        if parent.exists():
            return f"{parent} is a file, not a directory" if not parent.is_dir() else str(error.strerror)
    return str(error.strerror)


@contextlib.contextmanager
def replacing(out: Path, what: str, replace: bool = False) -> Iterator[Path]:
    """A staging directory beside `out`, which becomes `out` only when the block succeeds: a failed or
    interrupted write leaves `out` as it was. `what` names the argument in messages."""
    target = Path(os.path.abspath(out))
    with contextlib.suppress(OSError):  # first: a swap a kill cut short puts the old directory back
        clean_leftovers(target)
    _check_target(out, what, replace)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}{_WRITING}", dir=target.parent))
        staging.chmod(0o777 & ~_umask())  # mkdtemp's 0700 would hide a pull from the web server that serves it
    except OSError as e:
        raise BadInput(f"{what} {out}: cannot write there ({_why_not(target, e)})") from None
    with _held(staging):
        yield staging
        _swap(staging, target)


def _umask() -> int:
    """The process's umask, read without changing it (os.umask sets it: a race with other threads)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        status = Path("/proc/self/status").read_text().splitlines()
        return int(next(line for line in status if line.startswith("Umask:")).split()[1], 8)
    return 0o022


@contextlib.contextmanager
def scratch(parent: Path, name: str) -> Iterator[Path]:
    """A directory in `parent` for files on their way elsewhere (`install`'s downloads and library copies,
    moved out of it by rename): locked and noted as a staging directory is, so what a killed process left is
    removed by the next one here (first thing) and by `mlc-farm gc`."""
    with contextlib.suppress(OSError):
        clean_leftovers(parent / name)
    parent.mkdir(parents=True, exist_ok=True)
    with _held(Path(tempfile.mkdtemp(prefix=f".{name}{_WRITING}", dir=parent))) as path:
        yield path


@contextlib.contextmanager
def _held(staging: Path) -> Iterator[Path]:
    """`staging` locked and noted while the block runs, then removed with its note."""
    held = _lock(staging)
    note = _note(staging)
    try:
        yield staging
    finally:
        os.close(held)
        shutil.rmtree(staging, ignore_errors=True)
        if note:
            note.unlink(missing_ok=True)


def _notes() -> Path:
    from mlc_farm.settings import load_settings

    return load_settings().cache_dir / "writing"


def _note(staging: Path) -> Path | None:
    """Note where a staging directory is, for `gc` (best effort: a cache that cannot be written notes nothing)."""
    try:
        _notes().mkdir(parents=True, exist_ok=True)
        note = _notes() / f"{uuid.uuid4().hex}.path"
        note.write_text(str(staging))
        return note
    except OSError:
        return None


def clean_noted(dry_run: bool = False) -> list[Path]:
    """Staging directories of killed writes (`pull -o`, `tiny-model`) wherever they were: removed, with their
    notes. Only a directory named as this module names them and that no live process holds is touched."""
    removed = []
    for note in sorted(_notes().glob("*.path")) if _notes().is_dir() else []:
        with contextlib.suppress(OSError):
            staging = Path(note.read_text())
            if staging.exists() and not (_WRITING in staging.name and staging.is_dir() and _abandoned(staging)):
                continue  # still being written (or not ours): left alone
            if staging.exists():
                removed.append(staging)
                if not dry_run:
                    shutil.rmtree(staging, ignore_errors=True)
            if not dry_run:
                note.unlink(missing_ok=True)
    return removed


def _swap(staging: Path, target: Path) -> None:
    """Move `target` aside (locked, so a concurrent clean-up leaves it alone), rename `staging` into its place,
    then remove the old one; if the second rename fails, the old one goes back."""
    if not target.exists():
        os.rename(staging, target)
        return
    aside = target.with_name(f".{target.name}{_REPLACED}{uuid.uuid4().hex[:8]}")
    held = _lock(target)
    try:
        os.rename(target, aside)
        try:
            os.rename(staging, target)
        except BaseException:
            os.rename(aside, target)
            raise
    finally:
        os.close(held)
    shutil.rmtree(aside, ignore_errors=True)
