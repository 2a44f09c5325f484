"""Moving one file to its destination without ever losing, overwriting or half-moving it.

Same filesystem: ``os.link(src, dest)`` (fails if ``dest`` exists, so nothing is overwritten;
``os.rename`` would silently replace it on POSIX), then ``os.unlink(src)``. Between the two calls
the file has two names for one inode; :func:`recover_move` recognises that.

Across filesystems (``EXDEV``): copy to a hidden temporary name in the destination folder,
fsync it, verify its sha256 against the hash the ledger recorded, ``os.link`` it to the final
name, remove the temporary name, then remove the source. Folders are fsynced after each
name change so the change survives a power cut (POSIX: the directory entry is durable only
once the directory is synced).

Naming: a file keeps its name; if the name is taken, ``<stem>_<n><suffix>`` with the smallest
n >= 1 that is free.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from enum import Enum
from pathlib import Path

from batch import failpoints

FORCE_COPY_ENV = "FASHION_BATCH_FORCE_COPY"
"""Test hook: ``1`` takes the cross-filesystem path even on one filesystem."""

_CHUNK = 1 << 20


class MoveOutcome(Enum):
    """What :func:`recover_move` concluded about an interrupted move."""

    DONE = "done"
    """The file is at its destination only (the move is complete now)."""
    NOT_MOVED = "not_moved"
    """The file is in incoming only; the move must be redone."""
    LOST = "lost"
    """The file is in neither place (it was removed by someone else)."""


class VerifyError(OSError):
    """The copy's sha256 differs from the expected one; the copy was removed."""


class SourceNotRemovableError(OSError):
    """The source could not be deleted (e.g. EPERM/EACCES: immutable file, read-only folder).

    :func:`move_file` removed the destination name it had created, so the file is in incoming
    only, as before the call. ``str()`` says why.
    """


def display_path(path: str | os.PathLike[str]) -> str:
    """A path as printable UTF-8 text: bytes of a non-UTF-8 file name are shown as ``\\xNN``.

    For reports and HTTP file names; the file system calls keep using the path itself.
    """
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's content, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_dir(path: Path) -> None:
    """fsyncs a directory so the names created or removed in it are durable.

    A no-op on Windows, where directories cannot be opened for fsync (NTFS journals names).
    """
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(dest: Path) -> Path:
    """The hidden temporary name a cross-filesystem copy to ``dest`` is written under.

    Deterministic, so recovery finds it from the recorded destination alone.
    """
    return dest.with_name(f".{dest.name}.batch-partial")


def unique_destination(folder: Path, name: str) -> Path:
    """The first free name for ``name`` in ``folder``.

    Args:
        folder: destination folder (need not exist yet).
        name: the file's base name, e.g. ``"a.jpg"``.

    Returns:
        ``folder/name`` if free, else ``folder/<stem>_<n><suffix>`` with the smallest free n.
    """
    candidate = folder / name
    stem, suffix = os.path.splitext(name)
    n = 0
    while os.path.lexists(candidate) or os.path.lexists(temp_name(candidate)):
        n += 1
        candidate = folder / f"{stem}_{n}{suffix}"
    return candidate


def _copy_verified(src: Path, tmp: Path, expected_sha256: str) -> None:
    size = os.path.getsize(src)
    step = max(1, min(_CHUNK, (size + 1) // 2))  # >= 2 writes, so during_copy is mid-file
    digest = hashlib.sha256()
    with open(src, "rb") as fin, open(tmp, "wb") as fout:
        first = True
        while chunk := fin.read(step):
            fout.write(chunk)
            digest.update(chunk)
            if first:
                fout.flush()
                failpoints.reach("during_copy")
                first = False
        fout.flush()
        os.fsync(fout.fileno())
    if digest.hexdigest() != expected_sha256 or sha256_file(tmp) != expected_sha256:
        os.unlink(tmp)
        raise VerifyError(errno.EIO, f"copy of {src} does not match sha256 {expected_sha256}")


def move_file(src: Path, dest: Path, expected_sha256: str) -> None:
    """Moves ``src`` to ``dest``, never overwriting; atomic or verified copy-then-delete.

    Args:
        src: the file in incoming.
        dest: the final path (its folder is created if missing); must not exist.
        expected_sha256: the content hash recorded when the file was classified; a
            cross-filesystem copy must match it.

    Raises:
        FileExistsError: ``dest`` exists (nothing changed).
        FileNotFoundError: ``src`` does not exist.
        VerifyError: the copy did not match (nothing changed).
        SourceNotRemovableError: ``dest`` was complete but ``src`` could not be deleted; ``dest``
            was removed again (nothing changed, no second copy is left behind).
        OSError: other I/O failures; the source is only removed after ``dest`` is complete.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    force_copy = os.environ.get(FORCE_COPY_ENV) == "1"
    linked = False
    if not force_copy:
        try:
            os.link(src, dest)
            linked = True
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK):
                raise
    if not linked:
        tmp = temp_name(dest)
        _copy_verified(src, tmp, expected_sha256)
        failpoints.reach("after_copy_before_link")
        try:
            os.link(tmp, dest)
        finally:
            os.unlink(tmp)
    fsync_dir(dest.parent)
    failpoints.reach("after_link_before_unlink")
    _remove_source(src, dest)


def _remove_source(src: Path, dest: Path) -> None:
    """Last step of a move: delete ``src``; if it cannot be deleted, take ``dest`` back."""
    try:
        os.unlink(src)
    except FileNotFoundError:
        return  # someone removed it after we linked/copied: the file is at dest only
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(dest)
        fsync_dir(dest.parent)
        raise SourceNotRemovableError(
            exc.errno,
            f"cannot remove {display_path(src)} from incoming ({exc.strerror}); "
            f"the copy at the destination was removed",
        ) from exc
    fsync_dir(src.parent)


def recover_move(src: Path, dest: Path, expected_sha256: str) -> MoveOutcome:
    """Finishes or undoes a move that was interrupted at any point of :func:`move_file`.

    Args:
        src: the file's path in incoming.
        dest: the destination recorded before the move.
        expected_sha256: the file's recorded content hash.

    Returns:
        DONE if the file is now at ``dest`` only, NOT_MOVED if it is in incoming only (any
        temporary copy removed), LOST if it is in neither place.
    """
    tmp = temp_name(dest)
    if os.path.lexists(tmp):
        os.unlink(tmp)
        fsync_dir(tmp.parent)
    src_there, dest_there = src.exists(), dest.exists()
    if dest_there and src_there:
        # Interrupted between link and unlink. Same inode, or a complete verified copy: the
        # destination is good and the source is the extra name.
        if os.path.samefile(src, dest) or sha256_file(dest) == expected_sha256:
            try:
                _remove_source(src, dest)
            except SourceNotRemovableError:
                return MoveOutcome.NOT_MOVED  # dest removed again; the file stays in incoming
            return MoveOutcome.DONE
        return MoveOutcome.NOT_MOVED  # someone else's file took the name; choose again
    if dest_there:
        return MoveOutcome.DONE
    if src_there:
        return MoveOutcome.NOT_MOVED
    return MoveOutcome.LOST
