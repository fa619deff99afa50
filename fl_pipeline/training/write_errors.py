"""Recognizing a write that failed because of the disk, not because of a bug.

A full disk, a quota, a read-only mount or a directory the user may not
write reach FedKB in several costumes: `OSError` from Python and h5py,
`tf.errors.OpError` from TensorFlow's file system (TFF writes checkpoints
and CSV files through it), sometimes wrapped in another exception. The
message a user needs is the same: which directory, what the system said,
and what to do.
"""

from __future__ import annotations

import errno
import os

# errno -> what to do about it
_FIXES = {
    errno.ENOSPC: "free disk space",
    errno.EDQUOT: "free disk space (quota exceeded)",
    errno.EFBIG: "free disk space or raise the file size limit",
    errno.EROFS: "make the directory writable",
    errno.EACCES: "make the directory writable",
    errno.EPERM: "make the directory writable",
}


def write_failure(exc: BaseException) -> tuple[str, str] | None:
    """(what the system said, what to do) if `exc` or its cause is a failed write, else None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        number = getattr(exc, "errno", None)
        if isinstance(exc, OSError) and number in _FIXES:
            return os.strerror(number), _FIXES[number]
        text = str(exc)
        for number, fix in _FIXES.items():
            if os.strerror(number) in text:
                return os.strerror(number), fix
        exc = exc.__cause__ or exc.__context__
    return None
