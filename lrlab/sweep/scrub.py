"""Hydra's own files without passwords: a job's ``.hydra/*.yaml`` (its config, Hydra's config, its overrides)
and a sweep's ``multirun.yaml``, which Hydra writes with the tracking URI as it was given.

Hydra writes a job's files in ``run_job`` just before the callbacks' ``on_job_start``, and ``multirun.yaml``
in its sweeper after ``on_multirun_start``, before the first job: the callback scrubs them from there.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from lrlab.record.redact import redact

PRIVATE = 0o600  # the mode of a file that had to be scrubbed


def scrub_hydra_files(folder: Path, output_subdir: str | None = ".hydra") -> None:
    """Rewrite, without passwords, every file Hydra wrote in ``folder``: ``multirun.yaml`` (a sweep's folder)
    and ``<output_subdir>/*.yaml`` (a job's; ``hydra.output_subdir``, None where Hydra writes none). Each file
    that held one is replaced atomically, mode 0600; a file that is not there is skipped."""
    files = [folder / "multirun.yaml"]
    if output_subdir is not None:
        files += sorted((folder / output_subdir).glob("*.yaml"))
    for path in files:
        try:
            with open(path, encoding="utf-8", newline="") as file:
                text = file.read()
        except (FileNotFoundError, NotADirectoryError):
            continue
        clean = redact(text)
        if clean != text:
            _replace(path, clean)


def _replace(path: Path, text: str) -> None:
    """Write ``text`` to a private file beside ``path``, then put it in ``path``'s place."""
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp, PRIVATE)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def reserve_private(path: Path) -> None:
    """Create ``path`` empty, mode 0600, unless it exists: Hydra opens its files with ``open(path, "w")``,
    which keeps the mode of a file that is there, so what it writes there before a scrub is private."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE))
