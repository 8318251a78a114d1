"""Stack configuration -> validated Settings, with Pulumi's typed getters."""

from __future__ import annotations

import pulumi
from pulumi.runtime import config as runtime_config

from .settings import CONFIG_KEYS, ParsedSettings, check_keys, coerce, parse_settings


def _all_config_values() -> dict[str, object]:
    """Every key set for the stack (the CLI passes them in PULUMI_CONFIG, tests via
    set_all_config). Values only ever appear in errors."""
    return {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}


def _is_secret(full_key: str) -> bool:
    """Set with `pulumi config set --secret`: the language host passes the secret keys
    (PULUMI_CONFIG_SECRET_KEYS) to `set_all_config`, tests pass them directly."""
    return runtime_config.is_config_secret(full_key)


def read_settings(config: pulumi.Config, stack: str) -> ParsedSettings:
    values = _all_config_values()
    check_keys(values, {key for key in values if _is_secret(key)})
    raw: dict[str, object] = {}
    for key in CONFIG_KEYS:
        given = config.get(key.name)
        if given is not None:
            # The same strings as everywhere else (settings.coerce), which the typed getters
            # below then read; Pulumi's own getters would also take e.g. " 3" or "True".
            coerce(key, given)
        if key.type == "boolean":
            raw[key.name] = config.get_bool(key.name)
        elif key.type == "integer":
            raw[key.name] = config.get_int(key.name)
        else:
            raw[key.name] = given
    return parse_settings(raw, stack)
