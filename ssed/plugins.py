"""Which class runs a service: a built-in source, or a plugin named `module:Class`."""
import importlib

from .service import Service
from .sources import SOURCES


class PluginError(Exception):
    """A `class =` that cannot be loaded; the text is `FILE:LINE: why`."""


def service_class(sc):
    """The Service subclass for a ServiceConfig (plugins were checked by `check`)."""
    return load_class(sc, "<config>") if sc.cls else SOURCES[sc.source]


def load_class(sc, filename):
    where = f"{filename}:{sc.lines.get('class', sc.line)}"
    module_name, _, class_name = sc.cls.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise PluginError(f"{where}: class {sc.cls}: cannot import {module_name}: {exc!r}") from None
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Service)):
        raise PluginError(f"{where}: class {sc.cls}: not a subclass of ssed.Service")
    return cls


def check(config):
    """The errors of every plugin in `config` (import them now, so --check catches them)."""
    errors = []
    for sc in config.services:
        if sc.cls:
            try:
                load_class(sc, config.file)
            except PluginError as exc:
                errors.append(str(exc))
    return errors
