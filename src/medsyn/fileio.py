"""Atomic, never-clobbering writes shared by every stage, and the one check of an output path before any work.

Every output folder medsyn makes holds a marker file (`OWNER_MARK`) naming the verb that made it: a folder without
one holds someone else's files, which medsyn neither replaces (without --overwrite) nor resumes. While a verb
writes a folder it holds an OS lock (`fcntl.flock`) on the folder itself: a second writer is refused with the
first one's pid, and the lock goes with the verb, or with the process however it ends.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import os
import tempfile
import zipfile
from dataclasses import dataclass
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


MAX_JSON_BYTES = 64 << 20  # no file medsyn writes and reads back comes near this
MAX_JSON_DEPTH = 32        # nor nests deeper than this
FILE_FIX = ("the file is damaged or was not written by medsyn: restore it, rerun the step that writes it, or remove "
            "the folder and rerun")
TYPE_NAMES = {dict: "an object", list: "a list", str: "text", int: "a whole number", float: "a number",
              bool: "true/false", type(None): "null"}


# ---------------------------------------------------------------- the schema of a file medsyn reads back
#
# One small typed checker rather than pydantic: the schemas are a few flat fields per file, the messages must
# name the file, the field and the fix in medsyn's words, and `predict` and the server should not pay pydantic's
# import for them.

@dataclass(frozen=True)
class Field:
    """What one field must hold: a value of `kind` (a type or tuple of types; float takes whole numbers too, bool
    only where named), and where given: within [low, high] (finite), one of `choices`, an object matching the
    schema `fields`, a list whose every item matches `items`. `optional`: it may be missing or null.
    A schema is {name: Field or type}; a name ending in "*" applies to every key starting with the rest."""
    kind: type | tuple = object
    low: float | None = None
    high: float | None = None
    choices: tuple = ()
    fields: dict | None = None
    items: Field | type | None = None
    optional: bool = False


NUMBER = (int, float)


def check_fields(value, schema: dict, where: str, fix: str = FILE_FIX, prefix: str = "") -> None:
    """`value` must be an object matching `schema`; otherwise a MedsynError naming `where`, the field and `fix`."""
    if not isinstance(value, dict):
        if schema:
            required = [key for key, spec in schema.items() if not (isinstance(spec, Field) and spec.optional)]
            raise MedsynError(f"{where}: {f'field {prefix[:-1]!r} ' if prefix else ''}lacks "
                              f"{', '.join(prefix + key for key in required or schema)} (it holds "
                              f"{_type_name(value)}, not an object); {fix}.")
        return
    missing = []
    for key, spec in schema.items():
        spec = spec if isinstance(spec, Field) else Field(spec)
        names = _matching(key, value)
        if not names and not spec.optional:
            missing.append(prefix + key)
        for name in names:
            check_value(value[name], spec, where, prefix + name, fix)
    if missing:
        raise MedsynError(f"{where}: lacks {', '.join(missing)}; {fix}.")


def check_value(got, spec: Field, where: str, name: str, fix: str = FILE_FIX) -> None:
    """One field's value against its Field (see `check_fields`)."""
    def refuse(problem: str):
        raise MedsynError(f"{where}: field {name!r} is {problem}; {fix}.")

    if got is None and spec.optional:
        return
    named = spec.kind if isinstance(spec.kind, tuple) else (spec.kind,)
    kinds = named + (int,) if float in named else named
    if not isinstance(got, kinds) or (isinstance(got, bool) and bool not in kinds):
        wanted = [k for k in named if not (k is int and float in named)]  # "a number" covers whole numbers
        refuse(f"{_type_name(got)} ({str(got)[:40]!r}), not {' or '.join(map(_type_name, wanted))}")
    low, high = spec.low, spec.high
    if (low is not None or high is not None) and not (
            math.isfinite(got) and (low is None or got >= low) and (high is None or got <= high)):
        refuse(f"{got!r}, not " + (f"from {low:g} to {high:g}" if None not in (low, high)
                                   else f"at least {low:g}" if high is None else f"at most {high:g}"))
    if spec.choices and got not in spec.choices:
        refuse(f"{str(got)[:40]!r}, not one of {', '.join(map(str, spec.choices))}")
    if spec.fields is not None:
        check_fields(got, spec.fields, where, fix, f"{name}.")
    if spec.items is not None:
        item = spec.items if isinstance(spec.items, Field) else Field(spec.items)
        for i, one in enumerate(got):
            check_value(one, item, where, f"{name}[{i}]", fix)


def _matching(key: str, value: dict) -> list[str]:
    """The keys of `value` a schema's `key` names: itself, or every key with its prefix where it ends in "*"."""
    if key.endswith("*"):
        return [k for k in value if isinstance(k, str) and k.startswith(key[:-1])]
    return [key] if key in value else []


def _type_name(value_or_kind) -> str:
    kind = value_or_kind if isinstance(value_or_kind, type) else type(value_or_kind)
    return TYPE_NAMES.get(kind, kind.__name__)


def parse_json(text: str, where: str, fix: str = FILE_FIX):
    """JSON text with limits: at most MAX_JSON_BYTES and MAX_JSON_DEPTH levels (a file nested 200,000 deep is a
    message, not a RecursionError)."""
    if len(text) > MAX_JSON_BYTES:
        raise MedsynError(f"{where}: {len(text):,} characters of JSON, over the limit of {MAX_JSON_BYTES:,}; {fix}.")
    try:
        value = json.loads(text)
    except RecursionError:
        raise MedsynError(f"{where}: JSON nested too deeply (over {MAX_JSON_DEPTH} levels); {fix}.") from None
    except json.JSONDecodeError as err:
        raise MedsynError(f"{where}: not readable JSON ({err}); {fix}.") from err
    stack, deepest = [(value, 1)], 1
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_JSON_DEPTH:
            raise MedsynError(f"{where}: JSON nested too deeply (over {MAX_JSON_DEPTH} levels); {fix}.")
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return value


def read_json(path: str | os.PathLike, schema: dict | None = None, fix: str = FILE_FIX):
    """A JSON file medsyn wrote, read with `parse_json`'s limits and checked against `schema` (see `Field`); a
    damaged or foreign one is a MedsynError naming the file, the field and `fix`."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise MedsynError(f"{path}: {path.stat().st_size:,} bytes, over the JSON limit of {MAX_JSON_BYTES:,}; "
                              f"{fix}.")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise MedsynError(f"{path}: not readable JSON ({err}); {fix}.") from err
    value = parse_json(text, str(path), fix)
    check_fields(value, schema or {}, str(path), fix)
    return value


def read_jsonl(path: str | os.PathLike, schema: dict | None = None) -> list[dict]:
    """The rows of a JSON-lines log medsyn appends to, each checked against `schema`. A last line cut short (the
    process stopped while writing it) is left out; any other bad row is a MedsynError naming the file and line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as err:
        raise MedsynError(f"{path}: cannot be read ({err.strerror or err}); {FILE_FIX}.") from err
    numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
    rows = []
    for index, (number, line) in enumerate(numbered):
        try:
            row = parse_json(line, f"{path} line {number}")
        except MedsynError:
            if index == len(numbered) - 1 and not line.endswith(("}", "]")):
                break  # half-written by a process that stopped: the rows before it stand
            raise
        check_fields(row, schema or {}, f"{path} line {number}")
        rows.append(row)
    return rows


def read_csv(path: str | os.PathLike, schema: dict, fix: str = FILE_FIX) -> list[dict]:
    """The rows of a CSV file medsyn wrote, the `schema`'s int and float columns converted from text and every
    row checked (see `Field`): a cut, retyped or foreign file (no rows, a short row, text where a number belongs,
    a value out of range) is a MedsynError naming the file, the line, the column and `fix`."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            rows, columns = list(reader), reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise MedsynError(f"{path}: not a readable CSV file ({err}); {fix}.") from err
    if not rows:
        raise MedsynError(f"{path}: holds no rows; {fix}.")
    for number, row in enumerate(rows, start=2):
        if None in row or None in row.values():  # DictReader's marks of a short row and of a long one
            values = sum(v is not None for k, v in row.items() if k is not None) + len(row.get(None) or [])
            raise MedsynError(f"{path} line {number}: {values} values for {len(columns)} columns (cut short or "
                              f"edited); {fix}.")
        for key, spec in schema.items():
            for name in _matching(key, row):
                row[name] = _from_text(row[name], spec.kind if isinstance(spec, Field) else spec)
        check_fields(row, schema, f"{path} line {number}", fix)
    return rows


def _from_text(text: str, kind):
    """A CSV cell as the number its column holds; text that is no such number stays text (and is reported)."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    for number in (int, float):
        if number in kinds:
            try:
                return number(text)
            except ValueError:
                continue
    return text


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
MEDSYN_FILES = (OWNER_MARK,)       # medsyn's bookkeeping: not the folder's contents
_HELD_LOCKS: dict[str, int] = {}  # folder -> the open folder this process holds locked (until released or exit)


def _lock_key(out: Path) -> str:
    return str(Path(out).resolve())


def _distributed_worker() -> bool:
    """A torchrun process other than rank 0: rank 0 holds the folder's lock for all of them."""
    return int(os.environ.get("RANK", "0") or 0) != 0


def lock_out_dir(out: str | os.PathLike, verb: str, hold: bool = True) -> None:
    """Take (`hold`) or only test the exclusive OS lock (`flock`) on the existing folder `out` itself, so nothing
    is written for it; another process holding it is a MedsynError naming its pid (from /proc/locks)."""
    import fcntl

    out = Path(out)
    if _distributed_worker() or _lock_key(out) in _HELD_LOCKS or not out.is_dir():
        return
    try:
        fd = os.open(out, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as err:
        raise MedsynError(f"cannot open {out} ({err.strerror or err}); choose a readable, writable --out.") from err
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        owner = read_owner(out)
        raise MedsynError(f"--out {out} is being written by {_lock_holder(out)}"
                          f"{f' (`medsyn {owner}`)' if owner else ''}; two writers would overwrite each other's "
                          "files: wait for that process to finish (or stop it), or choose another --out.") from None
    if hold:
        _HELD_LOCKS[_lock_key(out)] = fd
    else:
        os.close(fd)  # closing releases the test lock


def _lock_holder(out: Path) -> str:
    """'pid N' of the process holding the flock on `out`, read from /proc/locks (Linux), else 'another process'."""
    stat = os.stat(out)
    inode = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as handle:
            for line in handle:
                fields = line.split()
                if "FLOCK" in fields and inode in fields:
                    return f"pid {fields[fields.index(inode) - 1]}"
    except OSError:
        pass
    return "another process"


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


def release_out_dirs(*folders) -> None:
    """Let go of the locks this process holds on `folders` (all of them when none is named): a verb is done."""
    for key in [k for k in _HELD_LOCKS if not folders or k in {_lock_key(f) for f in folders}]:
        os.close(_HELD_LOCKS.pop(key))


def check_out_dir(out: str | os.PathLike, verb: str, overwrite: bool | None = None, resume: bool = False,
                  replaces: bool = False) -> None:
    """Before any work: `out` must be writable, and if it holds files, medsyn's own from `verb` (to continue or
    resume them) or `overwrite` must be given (None: `verb` has no --overwrite). A resume needs a folder `verb`
    made. `replaces`: the verb will delete the folder's contents, so every file in it must be one medsyn recorded
    writing (`claim_out_dir(..., record=True)`); a user's file put there makes it refuse."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise MedsynError(f"--out {out} is a file; give a folder.")
    check_writable(out)
    lock_out_dir(out, verb, hold=False)  # a folder another process is writing is refused before any work
    owner = read_owner(out)
    if resume and holds_files(out) and owner != verb:
        what = f"was made by `medsyn {owner}`" if owner else "was not made by medsyn"
        raise MedsynError(f"--resume: {out} {what}, so there is no `medsyn {verb}` to resume in it; leave out "
                          "--resume and choose a new --out.")
    if holds_files(out) and owner != verb and not overwrite:
        what = f"`medsyn {owner}`'s files" if owner else "files medsyn did not write"
        raise MedsynError(f"--out {out} holds {what}; medsyn never replaces them: choose a new or empty folder"
                          f"{'' if overwrite is None else ', or pass --overwrite'}.")
    foreign = foreign_files(out) if replaces else []
    if foreign:
        raise MedsynError(f"--out {out} holds {len(foreign)} file(s) medsyn did not write (e.g. {foreign[0]}); "
                          "--overwrite replaces only medsyn's own files: move them out of the folder, or choose "
                          "another --out.")


def changed_settings(saved: dict, record: dict, may_change: tuple[str, ...] = (), defaults: dict | None = None
                     ) -> list[str]:
    """The settings (dotted names) in which `record` differs from the `saved` record of the same folder: the one
    rule for "may this folder be continued with these settings". A setting whose last name is in `may_change`
    (where a run runs, how long it goes on) is not compared; one missing from `saved` had its value in `defaults`
    then (a setting added since the folder was made)."""
    flat_saved, flat_record, flat_defaults = _flat(saved), _flat(record), _flat(defaults or {})
    return [key for key, value in flat_record.items() if key.rsplit(".", 1)[-1] not in may_change
            and flat_saved.get(key, flat_defaults.get(key)) != value]


def _flat(record: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in record.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def foreign_files(out: str | os.PathLike) -> list[str]:
    """Files in `out` (relative paths) that its marker does not record medsyn writing. A folder whose marker
    records no list (made before lists were kept) is trusted when it is medsyn's."""
    out = Path(out)
    if not holds_files(out):
        return []
    lines = _marker_lines(out)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name not in MEDSYN_FILES)
    if lines and len(lines) == 1:
        return []
    recorded = set(lines[1:])
    return [f for f in files if f not in recorded]

def holds_files(out: str | os.PathLike) -> bool:
    """Whether `out` is a folder holding anything besides medsyn's marker."""
    out = Path(out)
    return out.is_dir() and any(p.name not in MEDSYN_FILES for p in out.iterdir())


def _marker_lines(out: Path) -> list[str]:
    """The marker: the verb that made the folder, then (where recorded) one line per file medsyn wrote."""
    mark = Path(out) / OWNER_MARK
    try:
        return [line for line in mark.read_text(encoding="utf-8").splitlines() if line.strip()] \
            if mark.is_file() else []
    except (OSError, UnicodeDecodeError):
        return []


def read_owner(out: Path) -> str | None:
    lines = _marker_lines(out)
    return lines[0].strip() if lines else None


def claim_out_dir(out: str | os.PathLike, verb: str, record: bool = False) -> Path:
    """Make `out` (after `check_out_dir` and the input checks passed) and mark it as `verb`'s; `record`: also list
    every file now in it as medsyn's (for a verb that writes the whole folder at once, then replaces it). Takes the
    folder's lock (`lock_out_dir`) for the rest of this process."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lock_out_dir(out, verb)
    if record:
        files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name not in MEDSYN_FILES)
        write_text(out / OWNER_MARK, "\n".join([verb, *files]) + "\n")
    elif read_owner(out) != verb:
        write_text(out / OWNER_MARK, verb + "\n")
    return out


def load_tensors(path: str | os.PathLike, what: str, fix: str = "") -> dict:
    """A torch file read as tensors and plain values only (weights_only=True): a pickled payload cannot run.
    The one way medsyn reads a torch file; `what` names the file's role and `fix` says how to get a good one."""
    import torch

    hint = f" {fix}" if fix else ""
    if not Path(path).is_file():
        raise MedsynError(f"{what} {path}: no such file.{hint}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling refused, truncated, not a torch file: all a property of the file
        raise MedsynError(f"{what} {path}: not a file of tensors medsyn can load safely ({type(err).__name__}: "
                          f"{str(err)[:160]}); it is truncated, damaged or foreign, and medsyn loads only plain "
                          f"weights, never pickled code.{hint}") from err
    if not isinstance(state, dict):
        raise MedsynError(f"{what} {path}: holds a {type(state).__name__}, not a state dict of weights.{hint}")
    return state


MAX_NPZ_ARRAY_BYTES = 16 << 30  # a header may declare any size; refuse before numpy tries to allocate it
NPZ_READ_ERRORS = (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile)


def open_npz(path: str | os.PathLike, where: str, fix: str):
    """numpy's .npz archive at `path`, opened with allow_pickle=False (an object array cannot run code), for a
    `with` block whose members are read with `read_npz_member`. The one way medsyn opens an npz: `where` starts
    every message (the file, or the flag that named it) and `fix` ends it."""
    import numpy as np

    try:
        archive = np.load(path, allow_pickle=False)
    except NPZ_READ_ERRORS as err:
        raise MedsynError(f"{where}: not a readable .npz file ({type(err).__name__}: {str(err)[:120]}); "
                          f"{fix}.") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise MedsynError(f"{where}: holds a single array, not an .npz archive; {fix}.")
    return archive


def npz_member_bytes(archive, key: str, where: str, fix: str) -> int:
    """The size an npz member decodes to, from its header alone; a header declaring Python objects is refused."""
    import numpy as np

    try:
        with archive.zip.open(key + ".npy") as member:
            version = np.lib.format.read_magic(member)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(member)
    except NPZ_READ_ERRORS as err:  # a small member is read whole, so its CRC-32 is checked here
        raise MedsynError(f"{where}: {key} has a damaged header ({type(err).__name__}: {str(err)[:120]}); "
                          f"{fix}.") from None
    if dtype.hasobject:
        raise MedsynError(f"{where}: {key} holds Python objects (dtype object), which medsyn never unpickles (numbers "
                          f"and strings only); {fix}.")
    declared = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    if declared > MAX_NPZ_ARRAY_BYTES:
        raise MedsynError(f"{where}: {key} declares shape {shape} ({declared / 2**30:,.0f} GiB), over the "
                          f"{MAX_NPZ_ARRAY_BYTES >> 30} GiB limit; the file is damaged or far too large.")
    return declared


def read_npz_member(archive, key: str, where: str, fix: str):
    """One array of an open npz, refused before loading when its header declares Python objects or a huge size."""
    if key not in archive.files:
        raise MedsynError(f"{where}: no array {key!r} (it holds {', '.join(archive.files) or 'nothing'}); {fix}.")
    npz_member_bytes(archive, key, where, fix)
    try:
        return archive[key]
    except NPZ_READ_ERRORS as err:
        raise MedsynError(f"{where}: {key} cannot be read ({type(err).__name__}: {str(err)[:120]}); {fix}.") from None


def check_npz_budget(archive, keys, where: str, fix: str) -> None:
    """Refuse an npz whose members `keys` would together decode to more than `npz_budget()`, from their headers
    alone, before any of them is loaded."""
    declared = sum(npz_member_bytes(archive, key, where, fix) for key in keys)
    budget = npz_budget()
    if declared > budget:
        raise MedsynError(f"{where}: its arrays decode to {declared / 2**30:,.1f} GiB together, over the memory "
                          f"budget of {budget / 2**30:,.1f} GiB (a quarter of this machine's memory); use a smaller "
                          "file (fewer or smaller images).")


def npz_budget() -> int:
    """Bytes all members of an npz may decode to together: a quarter of this machine's memory (at most
    MAX_NPZ_ARRAY_BYTES), checked from the members' headers before any is loaded; conversion needs more again."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        physical = 16 << 30
    return min(MAX_NPZ_ARRAY_BYTES, physical // 4)


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
