"""The export folder, replaced whole or not at all.

    staged(study_dir)        a temporary folder to write into; it replaces <study_dir>/export
                             when the block ends, or is removed when it raises
    recover(study_dir)       after a killed export: restore its backup, drop its temporary folder
    save_weights(path, state)

The swap is two renames (old -> backup, new -> export): a kill between them leaves the backup,
which `recover` puts back on the next export. Processes exporting one study at once (every
host of a cluster finishing together, on a shared folder) take turns under a lock on
`<study_dir>/export.lock`, held from that recovery to the swap: without it one process's
recovery deleted another's temporary folder mid-write.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

from automodel import outputs

EXPORT_DIR = "export"
SCRIPT = "best_model.py"
WEIGHTS = "weights.pt"
_BACKUP = "export.old"
_TMP_PREFIX = "export.tmp-"
_LOCK = "export.lock"


@contextlib.contextmanager
def staged(study_dir: Path) -> Iterator[Path]:
    """A new temporary folder in `study_dir`; it becomes `study_dir/export` when the block
    ends, and is removed when the block raises (the previous export stays). The block runs
    under the study's export lock, after a killed export's leftovers are cleaned up."""
    study_dir = Path(study_dir)
    with _exclusive(study_dir):
        recover(study_dir)
        tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=study_dir))
        try:
            os.chmod(tmp, 0o755)  # mkdtemp makes it private; the export is meant to be shipped
            yield tmp
            _swap(tmp, study_dir / EXPORT_DIR, study_dir / _BACKUP)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


@contextlib.contextmanager
def _exclusive(study_dir: Path) -> Iterator[None]:
    """Hold the study's export lock (flock: released when the process dies, however)."""
    study_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(study_dir / _LOCK, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def recover(study_dir: Path) -> None:
    """Clean up after an export that was killed: restore its backup, drop its temporary folder.
    Call it under the export lock (`staged` does): another exporter's folder looks the same."""
    study_dir = Path(study_dir)
    final, backup = study_dir / EXPORT_DIR, study_dir / _BACKUP
    if backup.is_dir():
        if final.is_dir():
            shutil.rmtree(backup)
        else:
            os.replace(backup, final)
    for tmp in study_dir.glob(f"{_TMP_PREFIX}*"):
        shutil.rmtree(tmp, ignore_errors=True)


def save_weights(path: Path, state: dict[str, torch.Tensor]) -> None:
    """A plain state_dict of CPU tensors: loads with torch.load(weights_only=True)."""
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu().clone() for k, v in state.items()}, buffer)
    outputs.write_atomic(path, buffer.getvalue())


def _swap(tmp: Path, final: Path, backup: Path) -> None:
    """Put `tmp` in place of `final`: old -> backup, new -> final, drop backup."""
    if final.exists():
        os.replace(final, backup)
    os.replace(tmp, final)
    shutil.rmtree(backup, ignore_errors=True)
    _fsync_dir(final.parent)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
