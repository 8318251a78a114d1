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


def _all_config_values() -> dict[str, object]:
    """Every key set for the stack (the CLI passes them in PULUMI_CONFIG, tests via
    set_all_config), with secret values hidden: they only ever appear in errors."""
    values = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    return {k: "[secret]" if runtime_config.is_config_secret(k) else v for k, v in values.items()}


def read_settings(config: pulumi.Config, stack: str) -> ParsedSettings:
    check_unknown_keys(_all_config_values())
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
