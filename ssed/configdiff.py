"""What a reload changes: `diff(old, new)` names it, one line per section; `restart_only`
keeps what only a restart can change. Pure; works on config.py's frozen dataclasses through
their fields, so that a new key is compared without a word here.
"""
from dataclasses import fields, replace

# Settings a running daemon cannot take on reload (SPEC 12): its Redis connections and its
# listeners' socket options were made with the old ones.
_AT_RESTART = ("reuse_port",)


def diff(old, new):
    """What a reload from `old` to `new` changes, one line per section, [ssed] first."""
    changes = []
    top = [f.name for f in fields(old)
           if f.compare and f.name not in ("file", "services", "templates", "cluster")
           and getattr(old, f.name) != getattr(new, f.name)]
    if top:
        changes.append("changed [ssed]: " + ", ".join(top))
    if (old.cluster is None) != (new.cluster is None):
        changes.append(("added" if old.cluster is None else "removed") + " [cluster]")
    elif old.cluster != new.cluster:
        changes.append("changed [cluster]: " + ", ".join(_changed(old.cluster, new.cluster)))
    before = {s.path: s for s in old.services + old.templates}
    after = {s.path for s in new.services + new.templates}
    changes += [f"removed {path}" for path in before if path not in after]
    for service in new.services + new.templates:
        if service.path not in before:
            changes.append(f"added {service.path}")
        elif service != before[service.path]:
            names = _changed(before[service.path], service)
            changes.append(f"changed {service.path}: " + ", ".join(names))
    return changes


def _changed(old, new):
    names = []
    for f in fields(old):
        if f.compare and f.name == "options":
            names += sorted(k for k in old.options.keys() | new.options.keys()
                            if old.options.get(k) != new.options.get(k))
        elif f.compare and getattr(old, f.name) != getattr(new, f.name):
            names.append("class" if f.name == "cls" else f.name)
    return names


def restart_only(old, new):
    """`new` with the settings that apply at restart only taken back from `old`, and a
    warning for each that differed."""
    warnings = []
    if old.cluster != new.cluster:
        warnings.append("[cluster] changes apply at restart: this node keeps its "
                        "[cluster] settings until then")
        new = replace(new, cluster=old.cluster)
    for name in _AT_RESTART:
        if getattr(old, name) != getattr(new, name):
            warnings.append(f"[ssed] {name} changes apply at restart: the listeners keep "
                            f"{name} = {str(getattr(old, name)).lower()} until then")
            new = replace(new, **{name: getattr(old, name)})
    return new, warnings
