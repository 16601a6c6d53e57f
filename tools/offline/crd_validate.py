"""Strict offline validation of GKE custom resources against their pinned CRD schemas.

kubernetes-validate only knows built-in kinds. The CRD schemas of the GKE custom resources
this program renders are pinned under `tools/schemas/crds/` (provenance in `tools/schemas/crds/SOURCES.md`),
one file per served version: `<group>_<version>_<Kind>.json`, holding only that version's
`openAPIV3Schema`.

Validation is stricter than the API server, which silently prunes unknown fields: every object
schema that declares `properties` and sets neither `additionalProperties` nor
`x-kubernetes-preserve-unknown-fields: true` rejects unknown properties, so a typo such as
`spec.healthCheck.requestPth` is an error instead of a silently dropped setting.
`metadata` is checked as an object with name/namespace/labels/annotations only.

Not checked: CEL rules (`x-kubernetes-validations`) and list/map-type semantics
(`x-kubernetes-list-type`, `x-kubernetes-map-type`); only the `duration` and `date-time`
formats are checked.

    python -m tools.offline.crd_validate plan/prod/k8s/*.yaml
"""

from __future__ import annotations

import copy
import json
import re
import sys
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Optional

import yaml
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = ROOT / "tools" / "schemas" / "crds"

# API groups a document must belong to for the CLI to treat it as a GKE custom resource even if
# no schema is pinned for its kind (it is then reported as unsupported rather than skipped).
GKE_GROUP_SUFFIXES = ("cloud.google.com", ".gke.io", ".googleapis.com")


def _schema_files() -> dict[tuple[str, str], Path]:
    """(apiVersion, kind) -> schema file, from the `<group>_<version>_<Kind>.json` names."""
    found: dict[tuple[str, str], Path] = {}
    for path in sorted(SCHEMA_DIR.glob("*.json")):
        parts = path.stem.split("_")
        if len(parts) != 3 or not all(parts):
            raise RuntimeError(f"{path.name}: schema files are named <group>_<version>_<Kind>.json")
        group, version, kind = parts
        found[(f"{group}/{version}", kind)] = path
    return found


SCHEMA_FILES: dict[tuple[str, str], Path] = _schema_files()
# Sorted (apiVersion, kind) pairs a schema is pinned for.
SUPPORTED_KINDS: tuple[tuple[str, str], ...] = tuple(sorted(SCHEMA_FILES))
CRD_GROUPS: frozenset[str] = frozenset(api_version.split("/")[0] for api_version, _ in SUPPORTED_KINDS)


def supported_kinds_text() -> str:
    return ", ".join(f"{kind} ({api_version})" for api_version, kind in SUPPORTED_KINDS)


def api_group(doc: dict) -> str:
    """The API group of a manifest ("" for the core group)."""
    api_version = doc.get("apiVersion")
    if not isinstance(api_version, str) or "/" not in api_version:
        return ""
    return api_version.split("/", 1)[0]


def is_custom_resource(doc: Any) -> bool:
    """True for documents in a pinned CRD group or any GKE custom-resource group."""
    if not isinstance(doc, dict):
        return False
    group = api_group(doc)
    return group in CRD_GROUPS or any(group == s.lstrip(".") or group.endswith(s) for s in GKE_GROUP_SUFFIXES)


# --- schema transformation ---------------------------------------------------------------------

DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

METADATA_SCHEMA: dict = {
    "type": "object",
    "description": "ObjectMeta, as this repo renders it: name, namespace, labels, annotations.",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 253, "pattern": DNS1123_SUBDOMAIN},
        "namespace": {"type": "string", "minLength": 1, "maxLength": 63, "pattern": DNS1123_LABEL},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "required": ["name"],
    "additionalProperties": False,
}


def _openapi_to_jsonschema(node: dict) -> dict:
    """The few OpenAPI v3.0 / Kubernetes spellings JSON Schema 2020-12 reads differently."""
    if node.get("nullable") is True and isinstance(node.get("type"), str):
        node["type"] = [node["type"], "null"]
    if node.get("x-kubernetes-int-or-string") is True and "type" not in node and "anyOf" not in node:
        node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if isinstance(node.get(exclusive), bool):  # OpenAPI 3.0 boolean form
            if node.pop(exclusive) and bound in node:
                node[exclusive] = node.pop(bound)
    return node


def strict_schema(schema: dict) -> dict:
    """A copy of `schema` in which object schemas with `properties` reject unknown properties.

    Only the structural part is tightened (properties, items, additionalProperties); the value
    validations under anyOf/allOf/oneOf/not may restate a subset of the properties (Kubernetes
    structural-schema rule), so closing them would reject valid objects.
    """

    def walk(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        node = _openapi_to_jsonschema(dict(node))
        if isinstance(node.get("properties"), dict):
            node["properties"] = {name: walk(sub) for name, sub in node["properties"].items()}
            if "additionalProperties" not in node and node.get("x-kubernetes-preserve-unknown-fields") is not True:
                node["additionalProperties"] = False
        if isinstance(node.get("additionalProperties"), dict):
            node["additionalProperties"] = walk(node["additionalProperties"])
        if isinstance(node.get("items"), dict):
            node["items"] = walk(node["items"])
        for combinator in ("anyOf", "allOf", "oneOf"):
            if isinstance(node.get(combinator), list):
                node[combinator] = [_openapi_to_jsonschema(dict(s)) if isinstance(s, dict) else s for s in node[combinator]]
        return node

    root = walk(copy.deepcopy(schema))
    properties = root.setdefault("properties", {})
    # apiVersion, kind and metadata are implicit at the root of every CRD schema.
    for implicit in ("apiVersion", "kind"):
        properties.setdefault(implicit, {"type": "string"})
    properties["metadata"] = copy.deepcopy(METADATA_SCHEMA)
    root["required"] = sorted(set(root.get("required", [])) | {"apiVersion", "kind", "metadata"})
    root["additionalProperties"] = False
    return root


# --- formats, as the API server (kube-openapi strfmt) checks them -------------------------------

K8S_FORMATS = FormatChecker(formats=())

_GO_DURATION = re.compile(r"^[-+]?(0|((\d+(\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h))+)$")
_SCALA_DURATION = re.compile(r"^\s*(?:\d+\s*[A-Za-zµ]+\s*)+$")
_SCALA_UNITS = (("ns", "nano"), ("us", "µs", "micro"), ("ms", "milli"), ("s", "sec"), ("m", "min"),
                ("h", "hr", "hour"), ("d", "day"), ("w", "wk", "week"))


@K8S_FORMATS.checks("duration")
def _is_duration(value: object) -> bool:
    """kube-openapi strfmt.IsDuration: Go `time.ParseDuration`, else `<n> <unit>` groups."""
    if not isinstance(value, str):
        return True
    if _GO_DURATION.match(value):
        return True
    if not _SCALA_DURATION.match(value):
        return False
    for _, unit in re.findall(r"(\d+)\s*([A-Za-zµ]+)", value):
        unit = unit.lower()
        for variants in _SCALA_UNITS:
            if unit in variants or unit.startswith(variants[-1]):
                return True
    return False


@K8S_FORMATS.checks("date-time")
def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return False
    return "T" in value.upper()


# --- validation ---------------------------------------------------------------------------------


def load_schema(api_version: str, kind: str) -> dict:
    """The pinned openAPIV3Schema, unmodified."""
    return json.loads(SCHEMA_FILES[(api_version, kind)].read_text(encoding="utf-8"))


@lru_cache(maxsize=None)
def _validator(api_version: str, kind: str) -> Draft202012Validator:
    schema = strict_schema(load_schema(api_version, kind))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=K8S_FORMATS)


def json_path(parts: Iterable[Any]) -> str:
    out = "$"
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", str(part)):
            out += f".{part}"
        else:
            out += f"[{json.dumps(str(part))}]"
    return out


_JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number",
               type(None): "null"}


def _describe(error: ValidationError) -> list[str]:
    path = list(error.absolute_path)
    where = json_path(path)
    if error.validator == "additionalProperties" and error.validator_value is False:
        allowed = sorted(error.schema.get("properties", {}))
        extras = sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, dict) else []
        return [f"{json_path(path + [name])}: unknown field {name!r} (allowed: {', '.join(allowed) or 'none'})"
                for name in extras] or [f"{where}: {error.message}"]
    if error.validator == "required":
        missing = re.match(r"'(.*)' is a required property", error.message)
        name = missing.group(1) if missing else error.message
        return [f"{json_path(path + [name])}: required field is missing"]
    if error.validator == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        got = _JSON_TYPES.get(type(error.instance), type(error.instance).__name__)
        return [f"{where}: expected {expected}, got {got} {json.dumps(error.instance, default=str)[:80]}"]
    if error.validator == "anyOf" and error.schema.get("x-kubernetes-int-or-string"):
        return [f"{where}: expected integer or string, got {json.dumps(error.instance, default=str)[:80]}"]
    if error.validator == "format":
        return [f"{where}: {json.dumps(error.instance)} is not a valid {error.validator_value}"]
    return [f"{where}: {error.message}"]


def validate_custom_resource(doc: dict) -> list[str]:
    """Human-readable errors (each starting with its JSON path) of one custom-resource manifest."""
    if not isinstance(doc, dict):
        return [f"$: expected a mapping (a Kubernetes object), got {type(doc).__name__}"]
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if (api_version, kind) not in SCHEMA_FILES:
        return [f"$: no CRD schema for kind {kind!r} (apiVersion {api_version!r}); "
                f"supported kinds: {supported_kinds_text()}"]
    errors = sorted(_validator(api_version, kind).iter_errors(doc),
                    key=lambda e: ([str(p) for p in e.absolute_path], e.validator, e.message))
    return [line for error in errors for line in _describe(error)]


# --- CLI ----------------------------------------------------------------------------------------


def validate_files(paths: Iterable[str]) -> tuple[int, list[str]]:
    """(custom resources checked, error lines) over every document of every file."""
    checked, problems = 0, []
    for name in paths:
        try:
            docs = list(yaml.safe_load_all(Path(name).read_text(encoding="utf-8")))
        except (OSError, yaml.YAMLError) as exc:
            problems.append(f"{name}: cannot read: {exc}")
            continue
        for index, doc in enumerate(docs):
            if not is_custom_resource(doc):
                continue
            checked += 1
            label = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name', '?')}"
            where = name if len(docs) == 1 else f"{name} (document {index + 1})"
            problems.extend(f"{where}: {label}: {error}" for error in validate_custom_resource(doc))
    return checked, problems


def main(argv: Optional[list[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(f"usage: python -m tools.offline.crd_validate FILE...\n"
              f"Validates GKE custom resources strictly against tools/schemas/crds. Supported: {supported_kinds_text()}")
        return 0 if args else 2
    checked, problems = validate_files(args)
    for line in problems:
        print(line)
    print(f"{checked} custom resource(s) checked, {len(problems)} error(s)", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
