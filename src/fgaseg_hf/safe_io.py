"""Reading files from strangers and writing folders without harming the user's files.

* `load_torch_file`: `torch.load(..., weights_only=True)` (tensors and plain containers only: no code in a
  checkpoint runs) and safetensors, every failure (missing, empty, truncated, random bytes, a pickle that asks for
  a Python object) turned into one `UnsafeFileError` line naming the file.
* `load_restricted_pickle`: plain pickles (e.g. ADE20K-full's `index_ade20k.pkl`) read with an unpickler that
  resolves only builtin containers and numpy arrays; any other global is refused before it is imported.
* `atomic_write`: a file is written under a temporary name in its folder and renamed, so a reader (or a resumed
  run) never sees half a file.
* `OutputFolder`: the rule for every command that writes a folder. A non-empty folder is refused unless the user
  passes `--overwrite`; then only the files this package recorded in the folder's manifest are removed, and a file
  it did not write is never replaced.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

MANIFEST_NAME = ".fgaseg-written.json"


class UnsafeFileError(ValueError):
    """A file that cannot be read (safely): the message is one line naming the file and the problem."""


class OutputFolderError(ValueError):
    """An output folder that cannot be written without touching files this package did not write."""


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0].strip() if text else type(error).__name__


def _check_readable(path: Path, what: str) -> None:
    if not path.exists():
        raise UnsafeFileError(f"{path}: {what} not found")
    if not path.is_file():
        raise UnsafeFileError(f"{path}: {what} is not a file")
    if path.stat().st_size == 0:
        raise UnsafeFileError(f"{path}: {what} is empty (zero bytes)")


def _refused_global(error: BaseException) -> str | None:
    """The global a weights-only unpickler refused, from torch's long message (e.g. 'builtins.open')."""
    for line in str(error).splitlines():
        for marker in ("Unsupported global: GLOBAL ", "Unsupported operand", "Trying to call reduce for "):
            if marker in line:
                return line.split(marker, 1)[1].split(" ")[0].strip(" .:") or None
    return None


def load_torch_file(path: str | os.PathLike, what: str = "checkpoint"):
    """The tensors (and plain containers) of a PyTorch (`.pth`, `.bin`, `.pt`) or safetensors file.

    Nothing in the file is executed: pickles go through `torch.load(weights_only=True)`. Every way the file can
    be wrong raises `UnsafeFileError` with one line that names the file."""
    import torch

    path = Path(path)
    _check_readable(path, what)
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        except Exception as error:  # any failure of a user-chosen file is that file's problem, not a bug
            raise UnsafeFileError(f"{path}: not a readable safetensors {what} ({_first_line(error)})") from None
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        refused = _refused_global(error)
        if refused is None:  # not a refusal: bytes that do not even unpickle
            raise UnsafeFileError(f"{path}: cannot read the {what}: not a PyTorch checkpoint, or truncated") from None
        raise UnsafeFileError(
            f"{path}: refused to load the {what}: it holds Python objects other than tensors and plain containers"
            f" (it asks for {refused}); only weights are read from checkpoints"
        ) from None
    except Exception as error:  # truncated zip, random bytes, wrong format: one line, no traceback
        raise UnsafeFileError(
            f"{path}: cannot read the {what}: not a PyTorch checkpoint, or truncated ({_first_line(error)})"
        ) from None


def model_loading_errors() -> tuple[type[BaseException], ...]:
    """What `from_pretrained` raises on a model folder whose files are missing, empty, truncated or not what they
    claim to be: the folder's problem, reported in one line by the commands (anything else stays a bug)."""
    errors: tuple = (OSError, ValueError, KeyError, RuntimeError, EOFError, pickle.UnpicklingError)
    try:
        from safetensors import SafetensorError

        errors += (SafetensorError,)
    except ImportError:
        pass
    return errors


# numpy moved its pickling helpers from numpy.core to numpy._core in 2.0; files name either module.
_ALLOWED_GLOBALS = {
    ("builtins", name) for name in ("list", "dict", "tuple", "set", "frozenset", "str", "bytes", "bytearray", "int",
                                    "float", "complex", "bool", "slice")
} | {
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # how protocol-2 pickles store bytes
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
}


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only builtin containers, scalars and numpy arrays; anything else is refused (not imported)."""

    def find_class(self, module: str, name: str):
        module = {"__builtin__": "builtins", "_codecs": "_codecs"}.get(module, module)  # protocol-2 spelling
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        if module.startswith("numpy.core."):
            module = "numpy._core." + module[len("numpy.core."):]
        import importlib

        try:
            return getattr(importlib.import_module(module), name)
        except ImportError:  # numpy 1.x has no numpy._core
            return getattr(importlib.import_module(module.replace("numpy._core.", "numpy.core.")), name)


def load_restricted_pickle(path: str | os.PathLike, what: str = "pickle file"):
    """A plain pickle of containers and numpy arrays; `UnsafeFileError` (one line) for anything else."""
    path = Path(path)
    _check_readable(path, what)
    try:
        with open(path, "rb") as handle:
            return RestrictedUnpickler(io.BufferedReader(handle)).load()
    except pickle.UnpicklingError as error:
        raise UnsafeFileError(f"{path}: refused to load the {what}: {_first_line(error)}") from None
    except Exception as error:
        raise UnsafeFileError(f"{path}: cannot read the {what}: truncated or not a pickle ({_first_line(error)})") from None


# ------------------------------------------------------------------------------------------------ writing
def use_umask(path: str | os.PathLike) -> None:
    """Give a file made by `tempfile.mkstemp` (always 0600) the mode an ordinary `open` would: 0666 less the
    user's umask."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], suffix: str = ".tmp") -> None:
    """`write(temporary_path)` then rename onto `path`; on any failure the temporary file is removed and `path`
    is left as it was. `suffix` ends the temporary name (writers such as PIL pick the format from it)."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(handle)
    try:
        write(temporary)
        use_umask(temporary)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda p: Path(p).write_text(text, encoding="utf-8"))


class OutputFolder:
    """A folder a command writes, with a manifest of the files it wrote (relative paths).

    `prepare()` refuses a non-empty folder unless `overwrite`; with `overwrite` it removes the files an earlier run
    recorded (and nothing else). `claim(names)` records files before they are written (so that a run killed half
    way still owns what it left) and refuses a name that exists but was not written here.

    `additive=True` is for commands that only add named files next to others (`fgaseg segment` writing beside the
    images): a non-empty folder is accepted and nothing is removed up front; a file an earlier run wrote is
    replaced only with `overwrite`, and a file fgaseg did not write never is."""

    def __init__(self, path: str | os.PathLike, overwrite: bool = False, option: str = "--output", additive: bool = False):
        self.path = Path(path)
        self.overwrite = overwrite
        self.option = option
        self.additive = additive
        self.owned: set[str] = set()
        self.previous: set[str] = set()
        self.existing: set[Path] = set()

    @property
    def manifest(self) -> Path:
        return self.path / MANIFEST_NAME

    def _label(self) -> str:
        return f"{self.option} {self.path}" if self.option else str(self.path)

    def recorded(self) -> set[str]:
        """Relative paths an earlier run recorded (empty for a folder without a readable manifest)."""
        try:
            data = json.loads(self.manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return set()
        files = data.get("files", []) if isinstance(data, dict) else []
        return {f for f in files if isinstance(f, str)}

    def _inside(self, relative: str) -> Path | None:
        target = (self.path / relative).resolve()
        root = self.path.resolve()
        return target if target != root and target.is_relative_to(root) else None

    def prepare(self, modify: bool = True) -> OutputFolder:
        """Refuse a folder that may not be written; with `modify`, also remove what an earlier run recorded (with
        `overwrite`) and create the folder (`modify=False`: the check alone, for the processes of a distributed
        run other than the one that writes)."""
        if self.path.exists() and not self.path.is_dir():
            raise OutputFolderError(f"{self._label()}: exists and is not a folder")
        if self.path.is_dir() and self.additive:
            self.previous = self.recorded()
        elif self.path.is_dir():
            others = [p for p in self.path.iterdir() if p.name != MANIFEST_NAME]
            if others and not self.overwrite:
                raise OutputFolderError(
                    f"{self._label()}: the folder is not empty; choose another folder, or pass --overwrite to replace "
                    "what fgaseg wrote there (files it did not write are kept)"
                )
            if self.overwrite and modify:
                self._remove_recorded()
        if modify:
            self.path.mkdir(parents=True, exist_ok=True)
            self.existing = {p for p in self.path.rglob("*") if p.is_file()}
        return self

    def record_new_files(self) -> None:
        """Record every file that appeared in the folder since `prepare()` (for writers that name their files
        only as they go, e.g. `Trainer`'s checkpoints)."""
        new = {p.relative_to(self.path).as_posix() for p in self.path.rglob("*")
               if p.is_file() and p not in self.existing and p.name != MANIFEST_NAME}
        self.owned.update(new)
        files = sorted(self.owned | self.previous)
        atomic_write_text(self.manifest, json.dumps({"written_by": "fgaseg_hf", "files": files}, indent=1) + "\n")

    def _remove_recorded(self) -> None:
        folders = set()
        for relative in sorted(self.recorded()):
            target = self._inside(relative)
            if target is None:
                continue
            candidate = self.path / relative
            if candidate.is_file() or candidate.is_symlink():
                candidate.unlink()
            folders.update(parent for parent in candidate.parents if parent != self.path and self.path in parent.parents)
        for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
            try:
                folder.rmdir()  # only when empty: a folder holding the user's files stays
            except OSError:
                pass
        self.manifest.unlink(missing_ok=True)

    def claim(self, names: Iterable[str]) -> None:
        """Record `names` (relative paths) as written by this run, before writing them (after `check`)."""
        names = self.check(names)
        self.path.mkdir(parents=True, exist_ok=True)
        self.owned.update(names)
        files = sorted(self.owned | self.previous)
        atomic_write_text(self.manifest, json.dumps({"written_by": "fgaseg_hf", "files": files}, indent=1) + "\n")

    def check(self, names: Iterable[str]) -> list[str]:
        """`OutputFolderError` when one of `names` may not be written; writes nothing."""
        if self.additive and self.path.is_dir() and not self.previous:
            self.previous = self.recorded()
        names = [str(Path(n).as_posix()) for n in names]
        for name in names:
            # Lexical, not resolved: a folder the user linked inside (e.g. a dataset on another disk) is theirs to
            # write through; only a name that itself climbs out is refused.
            parts = Path(name).parts
            if not parts or Path(name).is_absolute() or ".." in parts:
                raise OutputFolderError(f"{self._label()}: {name!r} would be written outside the folder")
            if name == MANIFEST_NAME:
                raise OutputFolderError(f"{self._label()}: {name!r} is fgaseg's own record of what it wrote there")
            if name in self.owned or not (self.path / name).exists():
                continue
            if name not in self.previous:
                raise OutputFolderError(
                    f"{self._label()}: {self.path / name} exists and was not written by fgaseg; it is never replaced "
                    "(move it away or choose another folder)"
                )
            if not self.overwrite:
                raise OutputFolderError(
                    f"{self._label()}: {self.path / name} exists (written by an earlier run); pass --overwrite to "
                    "replace it"
                )
        return names

    def write_staged(self, write: Callable[[Path], None], check_with: OutputFolder | None = None,
                     before_claim: Callable[[], None] | None = None, keep_refused: bool = False) -> list[str]:
        """Let `write(staging)` fill a staging folder beside this one, then move its files in: the names are known,
        and checked (by `check_with`, default this folder's rule) against files fgaseg did not write, before
        anything here is replaced. `before_claim()` runs between the check and the move (e.g. `prepare`, removing an
        earlier run's files). With `keep_refused`, a refused result (hours of training, say) stays in a visible
        folder beside this one, named in the error."""
        import shutil

        target = self.path.absolute()
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.fgaseg-staging-"))
        try:
            write(staging)
            names = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
            try:
                (check_with or self).check(names)
            except OutputFolderError as error:
                if not keep_refused:
                    raise
                kept = Path(tempfile.mkdtemp(dir=target.parent, prefix=f"{target.name}.unsaved-"))
                staging.replace(kept)
                raise OutputFolderError(f"{error}; what this run made was saved in {kept} instead") from None
            if before_claim is not None:
                before_claim()
            self.claim(names)
            for name in names:
                (self.path / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.move(staging / name, self.path / name)  # a rename, unless the folder links to another disk
            return names
        finally:
            shutil.rmtree(staging, ignore_errors=True)


class OutputFiles:
    """Single files at paths the user named (a report, its Markdown table, a chart, a model card), under the rule
    of `OutputFolder(additive=True)` for the folder each one lies in: a file fgaseg did not write is never
    replaced, one an earlier run wrote only with `overwrite`. `check()` before the long work, `claim()` just
    before writing."""

    def __init__(self, files: Iterable[tuple[str, str | os.PathLike]], overwrite: bool = False):
        self.folders: dict[Path, tuple[OutputFolder, list[str]]] = {}
        for option, path in files:
            path = Path(path)
            folder = path.parent.absolute()
            if folder not in self.folders:
                self.folders[folder] = (OutputFolder(folder, overwrite, option=option, additive=True), [])
            self.folders[folder][1].append(path.name)

    def check(self) -> OutputFiles:
        for folder, names in self.folders.values():
            folder.check(names)
        return self

    def claim(self) -> None:
        self.check()
        for folder, names in self.folders.values():
            folder.claim(names)


__all__ = [
    "model_loading_errors", "MANIFEST_NAME", "OutputFiles", "OutputFolder", "OutputFolderError", "RestrictedUnpickler", "UnsafeFileError", "atomic_write",
    "atomic_write_text", "load_restricted_pickle", "load_torch_file", "use_umask",
]
