"""Stack configuration -> validated Settings, with Pulumi's typed getters."""

from __future__ import annotations

import pulumi
from pulumi.runtime import config as runtime_config

from .settings import (
    CONFIG_KEYS,
    MAX_MEMBERS,
    MIN_MEMBERS,
    ParsedSettings,
    SettingsError,
    check_unknown_keys,
    parse_settings,
)

# The same texts as settings.coerce: the only integer key is `members`.
_ALLOWED = {
    "boolean": "must be a boolean: true or false",
    "integer": f"must be an integer {MIN_MEMBERS}..{MAX_MEMBERS}",
    "string": "must be a string",
}


def _all_config_keys() -> list[str]:
    """Every key set for the stack: the CLI passes them in PULUMI_CONFIG, tests via set_all_config."""
    keys = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    return sorted(keys)


def read_settings(config: pulumi.Config, stack: str) -> ParsedSettings:
    check_unknown_keys(_all_config_keys())
    raw: dict[str, object] = {}
    for key in CONFIG_KEYS:
        try:
            if key.type == "boolean":
                raw[key.name] = config.get_bool(key.name)
            elif key.type == "integer":
                raw[key.name] = config.get_int(key.name)
            else:
                raw[key.name] = config.get(key.name)
        except pulumi.ConfigTypeError:
            raise SettingsError(key.name, config.get(key.name), _ALLOWED[key.type]) from None
    return parse_settings(raw, stack)
