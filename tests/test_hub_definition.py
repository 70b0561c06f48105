"""meltano-hub/tap-bolna.yml, the Meltano Hub definition: the Hub's JSON Schema accepts it, it
says what `tap-bolna --about` says, and it is what `make hub-definition` writes today."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import typing as t
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from tests.conftest import KIND_OF_JSON_TYPE, REPO_ROOT
from tests.pythons import claimed_versions, requires_python

if t.TYPE_CHECKING:
    from types import ModuleType

HUB = REPO_ROOT / "meltano-hub"
SCHEMAS = HUB / "schema"
GENERATOR = REPO_ROOT / "scripts" / "hub_definition.py"


@pytest.fixture(scope="module")
def about() -> dict[str, t.Any]:
    """What the installed tap says of itself."""
    tap = Path(sys.executable).with_name("tap-bolna")
    printed = subprocess.run(
        [str(tap), "--about", "--format=json"], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(printed)


@pytest.fixture(scope="module")
def definition() -> dict[str, t.Any]:
    return yaml.safe_load((HUB / "tap-bolna.yml").read_text(encoding="utf-8"))


def hub_validator() -> Draft7Validator:
    """The Hub's own check: every schema file registered under its `$id`, Draft 7."""
    resources = []
    for path in SCHEMAS.rglob("*.schema.json"):
        schema = json.loads(path.read_text(encoding="utf-8"))
        resources.append((schema["$id"], Resource.from_contents(schema, DRAFT7)))
    top = json.loads((SCHEMAS / "plugin_definitions" / "extractors.schema.json").read_text())
    return Draft7Validator(top, registry=Registry().with_resources(resources))


def generator() -> ModuleType:
    """scripts/hub_definition.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("hub_definition", GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_hub_schema_accepts_the_definition(definition: dict[str, t.Any]) -> None:
    errors = hub_validator().iter_errors(definition)
    assert [f"{list(error.absolute_path)}: {error.message}" for error in errors] == []


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"settings": [{"name": "api_key", "kind": "secret"}]}, "'secret' is not one of"),
        ({"load_schema": "bolna"}, "Additional properties are not allowed"),
        ({"quality": "platinum"}, "'platinum' is not one of"),
        ({"supported_python_versions": ["3.10", "3"]}, "does not match"),
        ({"capabilities": ["state", "incremental"]}, "'incremental' is not one of"),
    ],
)
def test_the_hub_schema_check_can_fail(
    definition: dict[str, t.Any], change: dict[str, t.Any], complaint: str
) -> None:
    """The schema files resolve and bite: each change here is one the Hub would refuse."""
    messages = [error.message for error in hub_validator().iter_errors({**definition, **change})]
    assert any(complaint in message for message in messages), messages


def test_a_missing_required_key_is_refused(definition: dict[str, t.Any]) -> None:
    for key in ("name", "namespace", "variant", "quality"):
        damaged = {name: value for name, value in definition.items() if name != key}
        assert not hub_validator().is_valid(damaged), key


def test_the_committed_definition_is_what_the_generator_writes() -> None:
    """A setting added to the tap without `make hub-definition` fails here, with the diff."""
    check = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def about_schema(properties: dict[str, t.Any], dotted: str) -> dict[str, t.Any] | None:
    """The --about schema of a Hub setting: `batch_config.encoding.format` is nested."""
    node: dict[str, t.Any] = {"properties": properties}
    for part in dotted.split("."):
        node = node.get("properties", {}).get(part)
        if node is None:
            return None
    return node


def left_out(name: str, schema: dict[str, t.Any], defined: set[str]) -> list[str]:
    """The --about settings under `name` that no Hub setting stands for."""
    if name in defined:
        return []
    members = schema.get("properties") or {}
    if not members or not any(other.startswith(f"{name}.") for other in defined):
        return [name]
    return [
        missing
        for member, member_schema in members.items()
        for missing in left_out(f"{name}.{member}", member_schema, defined)
    ]


def test_every_setting_agrees_with_about(
    definition: dict[str, t.Any], about: dict[str, t.Any]
) -> None:
    """Name, kind, default and secret of each setting, read from --about, not the generator."""
    properties = about["settings"]["properties"]
    settings = definition["settings"]
    defined = {setting["name"] for setting in settings}
    assert len(defined) == len(settings), "a setting is listed twice"
    missing = [m for name, schema in properties.items() for m in left_out(name, schema, defined)]
    assert missing == [], "settings of the tap missing from the Hub definition"
    for setting in settings:
        name = setting["name"]
        schema = about_schema(properties, name)
        assert schema is not None, f"{name}: not a setting of the tap"
        assert setting.get("value") == schema.get("default"), name
        assert setting.get("sensitive", False) is bool(schema.get("secret")), name
        declared = schema.get("type")
        if declared is None:  # a union (oneOf): one of its kinds
            union = [alt.get("type") for alt in schema.get("oneOf", []) + schema.get("anyOf", [])]
            kinds = {KIND_OF_JSON_TYPE[k] for kind in union if kind for k in _types(kind)}
            assert setting["kind"] in kinds, name
            continue
        (json_type,) = _types(declared)
        if schema.get("secret"):
            expected = "password"
        elif schema.get("format") == "date-time":
            expected = "date_iso8601"
        elif "enum" in schema:
            expected = "options"
            values = [option["value"] for option in setting["options"]]
            assert values == [value for value in schema["enum"] if value is not None], name
        else:
            expected = KIND_OF_JSON_TYPE[json_type]
        assert setting["kind"] == expected, name
        assert setting.get("description") == schema.get("description"), name


def _types(declared: str | list[str]) -> list[str]:
    kinds = [declared] if isinstance(declared, str) else declared
    return [kind for kind in kinds if kind != "null"]


def test_api_key_is_the_one_secret_and_the_one_required_setting(
    definition: dict[str, t.Any],
) -> None:
    sensitive = [setting["name"] for setting in definition["settings"] if setting.get("sensitive")]
    assert sensitive == ["api_key"]
    assert definition["settings_group_validation"] == [["api_key"]]


def test_what_the_tap_says_of_itself(definition: dict[str, t.Any], about: dict[str, t.Any]) -> None:
    assert definition["name"] == definition["executable"] == about["name"] == "tap-bolna"
    assert definition["namespace"] == "tap_bolna"
    assert definition["description"] == about["description"]
    assert sorted(definition["capabilities"]) == sorted(about["capabilities"])
    assert definition["settings_group_validation"] == [about["settings"]["required"]]


def test_supported_python_versions_are_what_requires_python_claims(
    definition: dict[str, t.Any], about: dict[str, t.Any]
) -> None:
    assert requires_python() == ">=3.10,<3.14"  # README "Quick start" says 3.10-3.13
    assert definition["supported_python_versions"] == claimed_versions()
    assert about["supported_python_versions"] == claimed_versions()
    assert claimed_versions() == ["3.10", "3.11", "3.12", "3.13"]


def test_repo_and_pip_url_come_from_pyproject(definition: dict[str, t.Any]) -> None:
    pyproject = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert f'Repository = "{definition["repo"]}"' in pyproject
    assert definition["pip_url"] == f"git+{definition['repo']}.git"


def test_execution_logs_stays_unselected_as_in_this_project(definition: dict[str, t.Any]) -> None:
    """The Hub definition and this repository's meltano.yml select and test alike."""
    project = yaml.safe_load((REPO_ROOT / "meltano.yml").read_text(encoding="utf-8"))
    (tap,) = [p for p in project["plugins"]["extractors"] if p["name"] == "tap-bolna"]
    assert definition["select"] == tap["select"] == ["*.*", "!execution_logs.*"]
    assert definition["commands"]["test"]["args"] == tap["commands"]["test"]["args"]
    assert definition["settings_group_validation"] == tap["settings_group_validation"]


# --------------------------------------------------------------------------- the generator's rules


@pytest.mark.parametrize(
    ("schema", "kind"),
    [
        ({"type": ["string", "null"], "format": "date-time"}, "date_iso8601"),
        ({"type": ["string"], "secret": True, "writeOnly": True}, "password"),
        ({"type": ["string", "null"], "enum": ["a", "b"]}, "options"),
        ({"type": ["integer", "null"], "minimum": 1}, "integer"),
        ({"type": ["number", "null"]}, "decimal"),
        ({"type": ["boolean", "null"]}, "boolean"),
        ({"type": ["array", "null"], "items": {"type": ["string"]}}, "array"),
        ({"type": ["object", "null"], "additionalProperties": True}, "object"),
        ({"oneOf": [{"type": ["string"]}, {"type": "array"}, {"type": "null"}]}, "array"),
        ({"oneOf": [{"type": ["number"]}, {"type": ["string"]}]}, "string"),
    ],
)
def test_kind_of_a_setting(schema: dict[str, t.Any], kind: str) -> None:
    assert generator().setting_kind(schema) == kind


def test_a_group_of_named_settings_is_dotted_a_mapping_stays_one_object() -> None:
    hub = generator()
    group = {
        "type": ["object", "null"],
        "properties": {"inner": {"type": ["object"], "properties": {"x": {"type": ["integer"]}}}},
        "additionalProperties": True,
    }
    mapping = {
        "type": ["object", "null"],
        "properties": {"__else__": {"type": ["null"]}},
        "additionalProperties": {"type": ["object"]},
    }
    assert [s["name"] for s in hub.hub_settings("batch_config", group)] == ["batch_config.inner.x"]
    assert [s["kind"] for s in hub.hub_settings("stream_maps", mapping)] == ["object"]


def test_a_new_setting_reaches_the_definition_with_its_default() -> None:
    """What happens when the tap grows a setting: it appears, typed, defaulted, labelled."""
    hub = generator()
    about = {
        "name": "tap-bolna",
        "description": "d",
        "supported_python_versions": ["3.10"],
        "capabilities": ["state"],
        "settings": {
            "required": ["api_key"],
            "properties": {
                "max_requests_per_minute": {
                    "type": ["integer", "null"],
                    "default": 400,
                    "description": "Pace.",
                }
            },
        },
    }
    extra = {"namespace": "tap_bolna", "variant": "v", "label": "Bolna"}
    found = hub.definition(about, extra, "https://example.invalid/tap-bolna")
    assert found["settings"] == [
        {
            "name": "max_requests_per_minute",
            "label": "Max Requests Per Minute",
            "kind": "integer",
            "description": "Pace.",
            "value": 400,
        }
    ]
    assert found["pip_url"] == "git+https://example.invalid/tap-bolna.git"


def test_metadata_cannot_repeat_what_the_tap_says() -> None:
    hub = generator()
    about = {
        "name": "tap-bolna",
        "description": "d",
        "supported_python_versions": [],
        "capabilities": [],
        "settings": {"properties": {}},
    }
    with pytest.raises(SystemExit, match="settings"):
        hub.definition(about, {"namespace": "n", "settings": []}, "https://example.invalid/x")
