"""`-o` options of `mooseng mount`: ours, and the rest passed on to FUSE."""

from dataclasses import dataclass

from fuse_client.attrs import Timeouts

FSNAME = "mooseng"
# default_permissions: the kernel checks access with our attributes like a local
# file system (open modes, exec, search), which setattr's time handling relies on.
ALWAYS = frozenset({"default_permissions", f"fsname={FSNAME}", f"subtype={FSNAME}"})
# A shared file system mounted by root: every user sees it, device nodes and
# set-user-ID programs work on it (FUSE turns both off unless asked).
AS_ROOT = frozenset({"allow_other", "dev", "suid"})
TIMEOUTS = ("attr_timeout", "entry_timeout", "negative_timeout")
DEFAULT_READ_AHEAD_KB = 1024


class MountOptionError(ValueError):
    """An -o option we cannot use; the message says which and why."""


@dataclass(frozen=True)
class MountOptions:
    fuse: frozenset[str]        # for pyfuse3.init
    timeouts: Timeouts
    writeback_cache: bool = False
    read_ahead_kb: int = DEFAULT_READ_AHEAD_KB
    delegations: bool = True    # docs/delegations.md


def parse(given: list[str], as_root: bool) -> MountOptions:
    """`given`: the values of every -o (each may hold several, comma-separated)."""
    items = [item.strip() for text in given for item in text.split(",") if item.strip()]
    fuse = set(ALWAYS | (AS_ROOT if as_root else set()))
    default = Timeouts()
    times = {"attr_timeout": default.attr, "entry_timeout": default.entry,
             "negative_timeout": None}
    writeback, read_ahead, delegations = False, DEFAULT_READ_AHEAD_KB, True
    for item in items:
        key, _, value = item.partition("=")
        if key in TIMEOUTS:
            times[key] = _number(key, value, float)
        elif key == "read_ahead_kb":
            read_ahead = int(_number(key, value, int))
        elif key in ("writeback_cache", "no_writeback_cache", "delegations",
                     "no_delegations"):
            if value:
                raise MountOptionError(f"-o {item}: {key} takes no value")
            if key.endswith("writeback_cache"):
                writeback = key == "writeback_cache"
            else:
                delegations = key == "delegations"
        else:
            fuse.add(item)
    negative = times["negative_timeout"]
    timeouts = Timeouts(attr=times["attr_timeout"], entry=times["entry_timeout"],
                        negative=times["entry_timeout"] if negative is None else negative)
    return MountOptions(frozenset(fuse), timeouts, writeback, read_ahead, delegations)


def _number(key: str, value: str, kind) -> float:
    try:
        number = kind(value)
    except ValueError:
        raise MountOptionError(f"-o {key}={value}: give a number (like {key}=1)") from None
    if number < 0:
        raise MountOptionError(f"-o {key}={value}: must not be negative")
    return number
