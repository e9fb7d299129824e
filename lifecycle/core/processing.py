"""The record of processing as the operator keeps it (deploy/processing.yaml): what each data
category is, why it is processed and whether the person provided it. `lifecycle records` builds
the full record from it (lifecycle/records.py); an access archive's manifest quotes it
(streams/access/requests.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from lifecycle.core.config import PROJECT_ROOT
from lifecycle.core.errors import ConfigError

__all__ = ["PROCESSING_FILE", "load_processing"]

PROCESSING_FILE = PROJECT_ROOT / "deploy" / "processing.yaml"


def load_processing(path: Path = PROCESSING_FILE) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("categories"), dict):
        raise ConfigError(f"{path}: expected a mapping with `categories`")
    return data
