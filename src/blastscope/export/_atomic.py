"""All-or-nothing file writes for the exports (their strict JSON is :mod:`blastscope.jsonable`).

Every export writes to a hidden temporary file in its target's folder and renames it into place
(``os.replace``) only once every file of the export is complete, so a failure leaves no
half-written file, and an existing file is replaced only with ``overwrite=True``. A temporary
file is named ``.<target name>.<12 hex digits>.part``; one left behind by a killed process is
found by :func:`stale_temporaries`.
"""

from __future__ import annotations

import errno
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from blastscope.errors import ExportError

FULL_DISK_ERRORS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
"""Write errors that mean "no room": a full disk, a file-size limit, a quota."""


class OutputExistsError(ExportError):
    """A file an export would write already exists and may not be replaced.

    ``flag`` is how the caller asks for a replacement (``overwrite=True`` in Python, a command
    line flag such as ``--force`` in the CLI); ``context`` adds why the file is there.
    """

    def __init__(self, path: str | Path, *, flag: str = "overwrite=True", context: str = ""):
        self.path = Path(path)
        self.context = context
        super().__init__(
            f"{self.path} already exists{context}; pass {flag} to replace it, or choose another "
            "output folder or name."
        )

    def with_flag(self, flag: str) -> OutputExistsError:
        """The same refusal naming ``flag`` as the way to replace the file."""
        return OutputExistsError(self.path, flag=flag, context=self.context)


_TEMPORARY_NAME = re.compile(r"\..+\.[0-9a-f]{12}\.part")


def temporary_name(target: str | Path) -> str:
    """A fresh name for a temporary file to be renamed onto ``target`` (hidden, ``.part``)."""
    return f".{Path(target).name}.{uuid.uuid4().hex[:12]}.part"


def stale_temporaries(folder: str | Path) -> list[Path]:
    """The temporary files of unfinished writes in ``folder`` (left by a killed process)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(
        path for path in folder.iterdir() if _TEMPORARY_NAME.fullmatch(path.name) and path.is_file()
    )


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files left in ``folder`` by writes that never finished; returns them.

    Call it only where no other process is writing into ``folder``.
    """
    removed = []
    for path in stale_temporaries(folder):
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        removed.append(path)
    return removed


class AtomicFiles:
    """A set of files written all-or-nothing.

    ``temporary(path)`` checks the target and returns a temporary path beside it to write to;
    ``commit()`` renames every temporary file onto its target; ``discard()`` removes them all.
    Use it as a context manager: it commits on success and discards on an exception.
    """

    def __init__(self, *, overwrite: bool = False) -> None:
        self.overwrite = overwrite
        self._pending: list[tuple[Path, Path]] = []

    def temporary(self, path: str | Path) -> Path:
        """A new temporary file beside ``path``, to be renamed onto ``path`` at commit."""
        target = Path(path)
        if target.is_dir():
            raise ExportError(f"{target} is a folder; give a file name to write to.")
        if target.exists() and not self.overwrite:
            raise OutputExistsError(target)
        if any(target == pending for pending, _ in self._pending):
            raise ExportError(f"{target} is written twice by the same export; use distinct names.")
        temporary = _create_temporary(ensure_folder(target.parent), target)
        self._pending.append((target, temporary))
        return temporary

    @property
    def pending(self) -> list[tuple[Path, Path]]:
        """``(target, temporary file)`` of every file written so far, in order."""
        return list(self._pending)

    def commit(self) -> list[Path]:
        """Rename every temporary file onto its target; returns the targets in order."""
        written = []
        try:
            for target, temporary in self._pending:
                os.replace(temporary, target)
                written.append(target)
        finally:
            self.discard()
        return written

    def discard(self) -> None:
        """Remove the temporary files not yet renamed."""
        for _, temporary in self._pending:
            temporary.unlink(missing_ok=True)
        self._pending.clear()

    def __enter__(self) -> AtomicFiles:
        return self

    def __exit__(
        self, error_type: type[BaseException] | None, error: BaseException | None, *_: object
    ) -> None:
        if error_type is None:
            self.commit()
            return
        folders = sorted({str(target.parent) for target, _ in self._pending})
        self.discard()
        if isinstance(error, OSError) and error.errno in FULL_DISK_ERRORS:
            folder = ", ".join(folders) or "the output folder"
            raise ExportError(
                f"Not enough room to write the outputs in {folder} ({error.strerror}): nothing "
                "was written. Free some disk space (or raise the file-size limit), or choose "
                "another output folder."
            ) from error


@contextmanager
def atomic_file(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Write one file atomically: yields a temporary path; renamed onto ``path`` on success."""
    with AtomicFiles(overwrite=overwrite) as files:
        yield files.temporary(path)


def ensure_folder(folder: str | Path) -> Path:
    """``folder``, created with its parents if missing; an :class:`ExportError` if impossible."""
    folder = Path(folder)
    if folder.is_dir():
        return folder
    if folder.exists():
        raise ExportError(
            f"Cannot create the output folder {folder}: a file has that name; move the file or "
            "choose another output folder."
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ExportError(
            f"Cannot create the output folder {folder} ({reason}); choose a folder you can write "
            "to (a path whose parents are folders, not files)."
        ) from error
    return folder


def check_writable(folder: str | Path) -> Path:
    """``folder`` (created if missing) after a test write; an :class:`ExportError` naming the
    folder and the fix when files cannot be written there."""
    folder = ensure_folder(folder)
    _create_temporary(folder, "write-test").unlink(missing_ok=True)
    return folder


def _create_temporary(folder: Path, target: str | Path) -> Path:
    """A new, empty temporary file in ``folder`` for ``target``; an :class:`ExportError` naming
    the folder when files cannot be created there."""
    temporary = folder / temporary_name(target)
    try:
        descriptor = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    except OSError as error:
        raise ExportError(
            f"Cannot write in the output folder {folder} ({error.strerror}); choose a folder "
            "you can write to."
        ) from error
    os.close(descriptor)
    return temporary
