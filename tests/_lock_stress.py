"""One process of the run-folder lock stress test: ``python _lock_stress.py FOLDER ATTEMPTS``.

Tries to lock FOLDER ATTEMPTS times; while holding the lock it creates FOLDER/owner with O_EXCL (so a
second simultaneous owner finds the file there: a double ownership), removes it and releases. Prints
``acquisitions double_ownerships``. No timing: the count of attempts bounds the run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from splatdistill.errors import UserError
from splatdistill.run_folder import RunFolderLock


def main(folder: Path, attempts: int) -> tuple[int, int]:
    acquired = doubles = 0
    marker = folder / "owner"
    for _ in range(attempts):
        lock = RunFolderLock(folder, "stress")
        try:
            lock.acquire()
        except UserError:
            continue
        acquired += 1
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            doubles += 1  # someone else holds "the" lock at the same time
        else:
            os.close(fd)
            os.unlink(marker)
        lock.release()
    return acquired, doubles


if __name__ == "__main__":
    print(*main(Path(sys.argv[1]), int(sys.argv[2])))
