"""Which class runs a service: a built-in source, or a plugin named `module:Class`.

`Plugins` imports the modules that `class =` names, and on reload reads again a module whose
file changed since it was loaded. The new code goes into a new module object; it replaces the
old one in `sys.modules` only when the whole reload is accepted (`commit`), so a reload refused
for any reason (a module that no longer imports, a config error, a port in use) changes
nothing. Only the module named by `class =` is read again, not the modules it imports.
"""
import importlib
import importlib.util
import os
import sys

from .service import Service
from .sources import SOURCES


class PluginError(Exception):
    """A `class =` that cannot be loaded; the text says why (without FILE:LINE)."""


def service_class(sc):
    """The Service subclass for a ServiceConfig (plugins were checked by `Plugins.check`)."""
    if not sc.cls:
        return SOURCES[sc.source]
    module_name, _, class_name = sc.cls.partition(":")
    return _class_in(importlib.import_module(module_name), sc)


def _class_in(module, sc):
    cls = getattr(module, sc.cls.partition(":")[2], None)
    if not (isinstance(cls, type) and issubclass(cls, Service)):
        raise PluginError(f"class {sc.cls}: not a subclass of ssed.Service")
    return cls


def _stamp(module):
    """(mtime_ns, size) of the module's source file, or None if it has none to read again."""
    path = getattr(module, "__file__", None)
    try:
        st = os.stat(path) if path and path.endswith(".py") else None
    except OSError:
        return None
    return st and (st.st_mtime_ns, st.st_size)


class Plugins:
    """The plugin modules of one daemon (or one `--check`)."""

    def __init__(self):
        self.stamps = {}    # module name -> _stamp() of the code now in sys.modules
        self.fresh = {}     # module name -> (new module, its stamp), read by the last check

    def check(self, config):
        """(line, message) for each `class =` that cannot be loaded: a check for
        `config.load`. Imports what is new; reads again, aside, what changed on disk."""
        self.fresh = {}
        errors = []
        for sc in config.services + config.templates:
            if sc.cls:
                try:
                    self._load(sc)
                except PluginError as exc:
                    errors.append((sc.lines.get("class", sc.line), str(exc)))
        return errors

    def commit(self):
        """Put the modules the last `check` read again in place; their names."""
        for name, (module, stamp) in self.fresh.items():
            sys.modules[name] = module
            self.stamps[name] = stamp
        names, self.fresh = sorted(self.fresh), {}
        return names

    def _load(self, sc):
        name = sc.cls.partition(":")[0]
        if name in self.fresh:
            return _class_in(self.fresh[name][0], sc)
        module = sys.modules.get(name)
        if module is None:
            try:
                module = importlib.import_module(name)
            except Exception as exc:
                raise PluginError(f"class {sc.cls}: cannot import {name}: {exc!r}") from None
            self.stamps[name] = _stamp(module)
        stamp = _stamp(module)
        if name not in self.stamps:
            self.stamps[name] = stamp    # loaded before us (by ssed itself, or a test)
        elif stamp is not None and stamp != self.stamps[name]:
            module = _read_again(module, name, sc)
            self.fresh[name] = (module, stamp)
        return _class_in(module, sc)


def _read_again(module, name, sc):
    """A new module object with the code now in `module`'s file (compiled from the source,
    since a .pyc written in the same second as a same-sized edit would pass for fresh)."""
    path = module.__file__
    package_dirs = getattr(module.__spec__, "submodule_search_locations", None)
    spec = importlib.util.spec_from_file_location(name, path,
                                                  submodule_search_locations=package_dirs)
    new = importlib.util.module_from_spec(spec)
    old = sys.modules.get(name)
    sys.modules[name] = new      # while it runs, as an import would: code may look itself up
    try:
        with open(path, "rb") as f:
            exec(compile(f.read(), path, "exec"), new.__dict__)
    except Exception as exc:
        raise PluginError(f"class {sc.cls}: {name} changed and cannot be loaded again "
                          f"(the old code runs on): {exc!r}") from None
    finally:
        sys.modules[name] = old
    return new
