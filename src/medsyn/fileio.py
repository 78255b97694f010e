"""Atomic, never-clobbering writes shared by every stage, and the one check of an output path before any work.

Every output folder medsyn makes holds a marker file (`OWNER_MARK`) naming the verb that made it: a folder without
one holds someone else's files, which medsyn neither replaces (without --overwrite) nor resumes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

from medsyn.errors import MedsynError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the destination folder; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    except OSError as err:  # checked before the work where possible; this catches what changed since
        raise MedsynError(f"cannot write {path} ({err.strerror or err}); choose a writable output path.") from err
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results should be as readable as any file
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once: setting it per write would race with other threads creating files


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | os.PathLike, required: tuple[str, ...] = ()):
    """A JSON file medsyn wrote; a damaged or foreign one (not JSON, or an object lacking a `required` key) is a
    MedsynError naming it."""
    hint = "the file is damaged or was not written by medsyn: restore it or rerun the step that writes it"
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise MedsynError(f"{path}: not readable JSON ({err}); {hint}.") from err
    missing = [key for key in required if not isinstance(value, dict) or key not in value]
    if missing:
        raise MedsynError(f"{path}: lacks {', '.join(missing)}; {hint}.")
    return value


def refuse_overwrite(path: str | os.PathLike, overwrite: bool, hint: str = "pass --overwrite to replace it") -> None:
    """Raise if the output file `path` cannot be written, or exists and the user did not ask to replace it."""
    path = Path(path)
    if path.is_dir():
        raise MedsynError(f"{path} is a folder; give a file name for the output.")
    check_writable(path.parent)
    if path.exists() and not overwrite:
        raise MedsynError(f"{path} already exists; medsyn never replaces results silently: {hint}, or choose "
                          "another path.")


OWNER_MARK = ".medsyn"


def check_writable(folder: str | os.PathLike) -> None:
    """Raise unless `folder` is, or can be created as, a folder this process may write into."""
    folder = Path(folder).absolute()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise MedsynError(f"cannot create {folder}: {existing} is a file, not a folder; choose another path.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise MedsynError(f"cannot write into {existing} (permission denied or read-only); choose a writable path.")


def check_out_dir(out: str | os.PathLike, verb: str, overwrite: bool | None = None, resume: bool = False) -> None:
    """Before any work: `out` must be writable, and if it holds files, medsyn's own from `verb` (to continue or
    resume them) or `overwrite` must be given (None: `verb` has no --overwrite). A resume needs a folder `verb`
    made."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise MedsynError(f"--out {out} is a file; give a folder.")
    check_writable(out)
    owner = read_owner(out)
    if resume and holds_files(out) and owner != verb:
        what = f"was made by `medsyn {owner}`" if owner else "was not made by medsyn"
        raise MedsynError(f"--resume: {out} {what}, so there is no `medsyn {verb}` to resume in it; leave out "
                          "--resume and choose a new --out.")
    if holds_files(out) and owner != verb and not overwrite:
        what = f"`medsyn {owner}`'s files" if owner else "files medsyn did not write"
        raise MedsynError(f"--out {out} holds {what}; medsyn never replaces them: choose a new or empty folder"
                          f"{'' if overwrite is None else ', or pass --overwrite'}.")


def holds_files(out: str | os.PathLike) -> bool:
    """Whether `out` is a folder holding anything besides medsyn's marker."""
    out = Path(out)
    return out.is_dir() and any(p.name != OWNER_MARK for p in out.iterdir())


def read_owner(out: Path) -> str | None:
    mark = Path(out) / OWNER_MARK
    try:
        return mark.read_text(encoding="utf-8").strip() if mark.is_file() else None
    except (OSError, UnicodeDecodeError):
        return None


def claim_out_dir(out: str | os.PathLike, verb: str) -> Path:
    """Make `out` (after `check_out_dir` and the input checks passed) and mark it as `verb`'s."""
    out = Path(out)
    if read_owner(out) != verb:
        write_text(out / OWNER_MARK, verb + "\n")
    return out


def load_tensors(path: str | os.PathLike, what: str) -> dict:
    """A torch file read as tensors and plain values only (weights_only=True): a pickled payload cannot run."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling refused, truncated, not a torch file: all a property of the file
        raise MedsynError(f"{what} {path}: not a file of tensors medsyn can load safely ({type(err).__name__}: "
                          f"{str(err)[:160]}); medsyn loads only plain weights, never pickled code.") from err
    if not isinstance(state, dict):
        raise MedsynError(f"{what} {path}: holds a {type(state).__name__}, not a state dict of weights.")
    return state


def tensors_buffer(state: dict):
    """`state` serialized to memory, for a library that insists on unpickling a path itself: it then reads only
    what `load_tensors` let through, never the user's file."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
