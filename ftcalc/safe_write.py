"""The one way ftcalc writes a file: checked first, written to a temporary file, then renamed into place.

    from ftcalc.safe_write import check_output, write_text
    out = check_output("spec.yaml", marker=SPEC_MARKERS, inputs=[dataset], force=a.force)  # before any work
    write_text(out, text, marker=SPEC_MARKERS, inputs=[dataset], force=a.force)

The rules, for every output (spec, report, plots, coefficients, measurement rows, run files):

- an existing file is replaced only when ftcalc wrote it for the same purpose (its first bytes hold one of
  ``marker``, e.g. the spec's ``# ftcalc training spec`` header) or the user passed ``--force``;
- a file the same command reads (``inputs``: the dataset, the model config, the price file) is never
  replaced, ``--force`` or not;
- the bytes go to a temporary file in the same folder, which is renamed over the target
  (``os.replace``, atomic on POSIX): an interrupted write leaves the old file whole;
- a path that cannot be written (missing or read-only folder, a file where a folder should be) is one
  :class:`~ftcalc.errors.DataFileError` line naming the path.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from ftcalc.errors import DataFileError, InvalidArgumentError

__all__ = ["check_output", "write_text", "write_bytes", "append_text", "atomic_output", "make_dir",
           "SPEC_MARKERS", "PLOT_MARKERS", "REPORT_MARKERS", "COEFFICIENT_MARKERS", "MEASUREMENT_MARKERS",
           "PLOT_FORMATS"]

# What ftcalc writes at the top of each kind of file (searched in the first _SNIFF_BYTES bytes)
SPEC_MARKERS = (b"# ftcalc training spec", b'"spec_version"', b"this ftcalc spec, written by ftcalc plan")
PLOT_MARKERS = (b"ftcalc plot",)  # the Software / Creator metadata ftcalc.viz.plots.save writes
REPORT_MARKERS = (b"ftcalc report",)
COEFFICIENT_MARKERS = (b'"throughput"', b"# Calibration report")
MEASUREMENT_MARKERS = (b'"outcome"', b'"run_id"')
PLOT_FORMATS = (".png", ".svg", ".pdf")
_SNIFF_BYTES = 4096


def _describe(e: OSError) -> str:
    return e.strerror or type(e).__name__


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def _owned(path: Path, marker: Iterable[bytes]) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(_SNIFF_BYTES)
    except OSError:
        return False
    return any(m in head for m in marker)


def check_output(path: str | os.PathLike[str], *, marker: Iterable[bytes] = (), inputs: Iterable[object] = (),
                 force: bool = False, what: str = "output", suffixes: Iterable[str] | None = None) -> Path:
    """Refuse ``path`` as an output before any work is done; returns it as a Path.

    Raises:
        DataFileError: it is one of ``inputs``; it is a folder; it exists, ftcalc did not write it for this
            purpose and ``force`` is off; its folder cannot be created or written.
        InvalidArgumentError: its extension is not one of ``suffixes``.
    """
    p = Path(path).expanduser()
    if str(path).strip() == "":
        raise InvalidArgumentError(f"the {what} path is empty")
    if suffixes is not None:
        allowed = tuple(suffixes)
        if p.suffix.lower() not in allowed:
            raise InvalidArgumentError(f"{p}: a {what} must end in {', '.join(allowed)}")
    for src in inputs:
        if src is None:
            continue
        s = Path(str(src)).expanduser()
        for cand in (s, s / "config.json") if s.is_dir() else (s,):
            if _same(p, cand):
                raise DataFileError(f"{p} is an input of this command; write the {what} somewhere else")
    if p.is_dir():
        raise DataFileError(f"{p} is a folder; give a file name for the {what}")
    if p.exists() and not force and not _owned(p, marker):
        raise DataFileError(f"{p} exists and ftcalc did not write it as a {what}; choose another path or pass "
                            "--force to replace it")
    parent = p.parent
    probe = parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise DataFileError(f"cannot write {p}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise DataFileError(f"cannot write {p}: {probe} is not writable")
    if p.exists() and not os.access(p, os.W_OK) and not os.access(parent, os.W_OK):
        raise DataFileError(f"cannot write {p}: not writable")
    return p


def make_dir(path: str | os.PathLike[str]) -> Path:
    """``mkdir -p`` with a failure as one DataFileError line naming the path."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataFileError(f"cannot create the folder {p}: {_describe(e)}") from None
    return p


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], *, marker: Iterable[bytes] = (), inputs: Iterable[object] = (),
                  force: bool = False, what: str = "output", suffixes: Iterable[str] | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for a library that writes by file name (savefig); on success it
    is renamed over ``path``, on failure removed. Checks ``path`` as :func:`check_output` does."""
    p = check_output(path, marker=marker, inputs=inputs, force=force, what=what, suffixes=suffixes)
    make_dir(p.parent)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{p.name}.", suffix=f".tmp{p.suffix}", dir=p.parent)
    except OSError as e:
        raise DataFileError(f"cannot write {p}: {_describe(e)}") from None
    os.close(fd)
    tmp = Path(tmp_name)
    _usual_mode(tmp, p)
    try:
        yield tmp
        os.replace(tmp, p)
    except OSError as e:
        raise DataFileError(f"cannot write {p}: {_describe(e)}") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _usual_mode(tmp: Path, target: Path) -> None:
    """mkstemp creates 0600; give the file the mode the target has, or that a plain open() would give it
    (0666 less the umask), so a spec, report or plot is as readable as any file the user writes."""
    try:
        mode = target.stat().st_mode & 0o777 if target.exists() else 0o666 & ~_umask()
        os.chmod(tmp, mode)
    except OSError:
        pass


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike[str], data: bytes, **kw: object) -> Path:
    """Write ``data`` to ``path`` atomically, after :func:`check_output` (same keyword arguments)."""
    with atomic_output(path, **kw) as tmp:  # type: ignore[arg-type]
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str, **kw: object) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, after :func:`check_output` (same keyword arguments)."""
    return write_bytes(path, text.encode("utf-8"), **kw)


def append_text(path: str | os.PathLike[str], text: str, *, marker: Iterable[bytes] = (),
                inputs: Iterable[object] = (), force: bool = False, what: str = "output") -> Path:
    """Append ``text`` to ``path``: the old content plus ``text`` go to a temporary file that replaces it,
    so an interrupted append leaves the old rows whole. An existing file must carry ``marker``."""
    p = Path(path).expanduser()
    old = b""
    if p.is_file():
        check_output(p, marker=marker, inputs=inputs, force=force, what=what)
        try:
            old = p.read_bytes()
        except OSError as e:
            raise DataFileError(f"cannot read {p}: {_describe(e)}") from None
        if old and not old.endswith(b"\n"):
            old += b"\n"
    return write_bytes(p, old + text.encode("utf-8"), marker=marker, inputs=inputs, force=True, what=what)
