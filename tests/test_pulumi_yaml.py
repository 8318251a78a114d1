"""Pulumi.yaml mirrors the settings table; the stack files say what they demonstrate."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from components.settings import CONFIG_KEYS, DEFAULT_IMAGE, PROJECT
from components.versions import EtcdVersion, version_from_image
from lab.program import stack_config

ROOT = Path(__file__).resolve().parent.parent
PYTHON_TYPES = {"boolean": bool, "integer": int, "string": str}


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def test_project_name_and_runtime():
    project = load("Pulumi.yaml")
    assert project["name"] == PROJECT == "etcd-peer-san"
    runtime = project["runtime"]
    assert runtime["name"] == "python"
    # One virtual environment for the CLI, the tests and the lab.
    assert runtime["options"]["virtualenv"] == ".venv"


def test_config_block_equals_the_settings_table():
    declared = load("Pulumi.yaml")["config"]
    expected = {
        key.name: {"type": key.type, "default": key.default, "description": key.description}
        for key in CONFIG_KEYS
    }
    assert declared == expected
    assert list(declared) == [key.name for key in CONFIG_KEYS]


@pytest.mark.parametrize("key", CONFIG_KEYS, ids=lambda key: key.name)
def test_defaults_have_the_declared_type(key):
    # bool is an int in Python: check the exact type.
    assert type(key.default) is PYTHON_TYPES[key.type]


def test_default_image_is_a_pinned_current_release():
    version = version_from_image(DEFAULT_IMAGE)
    assert version is not None
    assert version >= EtcdVersion(3, 6, 0)
    assert DEFAULT_IMAGE.startswith("gcr.io/etcd-development/etcd:v")


@pytest.mark.parametrize(("stack", "skip"), [("skip", True), ("noskip", False)])
def test_stack_files_set_skip_and_image_explicitly(stack, skip):
    document = load(f"Pulumi.{stack}.yaml")
    assert document["config"] == {
        f"{PROJECT}:skipClientSanVerification": skip,
        f"{PROJECT}:image": DEFAULT_IMAGE,
    }
    # As the CLI passes them to the program: strings.
    assert stack_config(stack, ROOT) == {
        f"{PROJECT}:skipClientSanVerification": "true" if skip else "false",
        f"{PROJECT}:image": DEFAULT_IMAGE,
    }
