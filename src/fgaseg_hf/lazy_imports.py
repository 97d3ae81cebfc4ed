"""Keeping `import fgaseg_hf` and the CLI's help light: torch and transformers load only when a class is used.

Registering the model families with transformers' Auto classes needs the classes, hence torch. It happens at the
first moment it is both possible and needed: right away when transformers is already imported, otherwise as soon
as an import of transformers (by the user, or by one of this package's modules) has finished and no module of this
package is half-initialised. `AutoModel.from_pretrained(folder)` after `import fgaseg_hf` therefore works as it did
when the package imported everything eagerly.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
from collections.abc import Callable


class LazyModule:
    """A stand-in for a module that imports it on first attribute access (`torch = LazyModule("torch")` keeps a
    module's top level light while its functions use `torch.` as usual)."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attribute: str):
        return getattr(importlib.import_module(self._name), attribute)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


class _ImportWatcher:
    """A meta-path finder that only observes: it lets the ordinary path finder locate `transformers` and this
    package's submodules, and calls `on_loaded` after each of them has executed."""

    def __init__(self, package: str, on_loaded: Callable[[], None]):
        self.package, self.on_loaded = package, on_loaded

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "transformers" and not fullname.startswith(self.package + "."):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return None  # found some other way (zip, custom finder): not watched
        execute = loader.exec_module

        def exec_module(module):
            execute(module)
            # The import machinery clears this flag only after we return; the module is complete now.
            module.__spec__._initializing = False
            self.on_loaded()

        # The path finder makes a fresh loader per spec, so this affects this one import only.
        loader.exec_module = exec_module
        return spec


def _initialising(package: str) -> bool:
    """Whether a submodule of `package` is part-way through its import (its classes may not exist yet)."""
    for name, module in list(sys.modules.items()):
        if name.startswith(package + ".") and getattr(getattr(module, "__spec__", None), "_initializing", False):
            return True
    return False


class DeferredRegistration:
    """Runs `register` once, when transformers is loaded and the package's modules are complete."""

    def __init__(self, package: str, register: Callable[[], None]):
        self.package, self.register, self.done = package, register, False
        self.watcher = _ImportWatcher(package, self.maybe_run)

    def maybe_run(self) -> None:
        if self.done or "transformers" not in sys.modules or _initialising(self.package):
            return
        transformers = sys.modules["transformers"]
        if getattr(getattr(transformers, "__spec__", None), "_initializing", False):
            return
        self.done = True  # first: registering imports modules, whose loading calls back here
        if self.watcher in sys.meta_path:
            sys.meta_path.remove(self.watcher)
        self.register()

    def install(self) -> None:
        if "transformers" in sys.modules:
            self.maybe_run()
        if not self.done and self.watcher not in sys.meta_path:
            sys.meta_path.insert(0, self.watcher)


__all__ = ["DeferredRegistration", "LazyModule"]
