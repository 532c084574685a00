"""Make the next read of a store's files come from the device (benchmarks, calibration).

>>> import tempfile; drop_page_cache(tempfile.mkdtemp())
"""

import os


def drop_page_cache(root: str) -> None:
    """Flush, then ask the kernel to forget the cached pages of every file under ``root``."""
    for folder, _, names in os.walk(root):
        for name in names:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
