"""Writing files so that a reader never sees half of one, nor half of a set of them."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

#: A temporary file is named ``.<name>.<random>.tmp`` beside the file it will replace.
TEMP_PREFIX, TEMP_SUFFIX = ".", ".tmp"


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path``, renamed over it when the block succeeds.

    The rename is atomic on one file system, so concurrent writers of the same file (array
    jobs sharing an output folder) and readers see either the old or the new file.
    """
    with replacing_all([path]) as (tmp,):
        yield tmp


@contextmanager
def replacing_all(paths: Sequence[Path]) -> Iterator[list[Path]]:
    """Temporary paths beside each of ``paths``, all renamed over them when the block succeeds.

    When it fails (a full disk, say), none is: the temporary files and the folders made for
    them are removed again, so a set of outputs is published whole or not at all.
    """
    made: list[Path] = []
    tmps: list[Path] = []
    try:
        for path in paths:
            made += _make_folder(path.parent)
            fd, tmp = tempfile.mkstemp(
                dir=path.parent, prefix=f"{TEMP_PREFIX}{path.name}.", suffix=TEMP_SUFFIX
            )
            os.close(fd)
            tmps.append(Path(tmp))
        yield tmps
    except BaseException:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
        for folder in reversed(made):
            with suppress(OSError):  # another job's files went in meanwhile: theirs now
                folder.rmdir()
        raise
    for tmp, path in zip(tmps, paths, strict=True):
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)


def _make_folder(folder: Path) -> list[Path]:
    """Make ``folder`` and its missing parents; the ones made, outermost first."""
    missing = [p for p in [folder, *folder.parents] if not p.exists()][::-1]
    folder.mkdir(parents=True, exist_ok=True)
    return missing
