"""Reading the config file and resolving settings: the one path the CLI and the Python API share.

The config file is ``$S3SYNC_CONFIG`` or ``$XDG_CONFIG_HOME/s3sync/config.toml``
(``~/.config/s3sync/config.toml``); a missing default file is not an error. ``load``
reads it and merges it with the ``S3SYNC_*`` variables of the environment mapping it is
given and the explicit flags (``config.resolve``). This module never reads
``os.environ``: its caller passes the environment (the CLI ``os.environ``, the API
``os.environ`` or the mapping its caller gave).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .config import Settings, resolve
from .errors import ConfigError


def config_path(env: Mapping[str, str]) -> tuple[Path, bool]:
    """The config file's path, and whether it was named explicitly (``$S3SYNC_CONFIG``)."""
    explicit = env.get("S3SYNC_CONFIG")
    if explicit:
        return Path(explicit), True
    base = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".config")
    return Path(base) / "s3sync" / "config.toml", False


def read_config(path: Path, explicit: bool) -> dict[str, Any]:
    """The parsed TOML document at ``path`` (``{}`` if it is the default file and absent).

    Raises:
        ConfigError: the file is unreadable, not UTF-8 or not valid TOML.
    """
    if not explicit and not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config ({err.strerror})") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML ({err})") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML (not UTF-8: byte {err.object[err.start]:#04x} "
                          f"at offset {err.start})") from err


def load(env: Mapping[str, str], flags: Mapping[str, Any]) -> Settings:
    """Resolve settings from the config file, ``S3SYNC_*`` variables of ``env`` and ``flags``.

    Args:
        env: the environment to read ``S3SYNC_*``, ``XDG_CONFIG_HOME`` and ``HOME`` from.
        flags: explicit values (``endpoint_url``, ``profile``, ``region``, ``no_sign_request``,
            ``concurrency``, ``chunk_size``, ``part_size``); None means "not given".

    Raises:
        ConfigError: the config file is unreadable or invalid.
        UsageError: a bad size, number or endpoint URL in the environment or flags.
    """
    path, explicit = config_path(env)
    return resolve(read_config(path, explicit), env, flags, str(path), cpus=os.cpu_count())
