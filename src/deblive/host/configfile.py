"""Reading a config file: YAML from disk, validated with the host's defaults.

The config model itself is pure (model.config); this is where the file is
read and the host's facts (mirror, release, architecture, release table) are
gathered, once, and handed to it.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from deblive.host.hostapt import host_defaults
from deblive.model.config import ConfigError, HostDefaults, ImageConfig, parse


def load(path: Path, overrides: dict[str, Any] | None = None,
         host: HostDefaults | None = None) -> ImageConfig:
    """Read and validate a config file (ConfigError naming the file and key)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse(data, path.resolve(), host or host_defaults(), overrides)


def default_config_text() -> str:
    return resources.files("deblive").joinpath("data/default.yaml").read_text(encoding="utf-8")


def load_default(overrides: dict[str, Any] | None = None,
                 host: HostDefaults | None = None) -> ImageConfig:
    """The embedded default image: a minimal live system of the host's release and arch."""
    data = yaml.safe_load(default_config_text())
    return parse(data, None, host or host_defaults(), overrides)
