"""Reading small sysfs attribute files, with errors turned into a reason a user can act on."""
from __future__ import annotations

from pathlib import Path

from haste_edge.energy.base import MeterUnavailable


def read_text(path) -> str:
    return Path(path).read_text()


def read_number(path, read=read_text) -> float:
    """The number in a sysfs file; MeterUnavailable (with the reason) if it cannot be read."""
    try:
        text = read(path).strip()
    except PermissionError:
        raise MeterUnavailable(f"{path}: permission denied") from None
    except OSError as e:
        raise MeterUnavailable(f"{path}: {e.strerror or e}") from None
    try:
        return float(text)
    except ValueError:
        raise MeterUnavailable(f"{path}: not a number ({text[:40]!r})") from None


def read_name(path, read=read_text) -> str:
    """A sysfs `name` file's text; MeterUnavailable (with the reason) if it cannot be read."""
    try:
        return read(path).strip()
    except OSError as e:
        raise MeterUnavailable(f"{path}: {e.strerror or e}") from None


def sysfs_dir(root, hint: str = "") -> Path:
    """root as a Path; MeterUnavailable if it is not a directory (hint: what that usually means)."""
    root = Path(root)
    if not root.is_dir():
        raise MeterUnavailable(f"{root}: no such directory" + (f" ({hint})" if hint else ""))
    return root
