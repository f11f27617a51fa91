"""What a template declares and sees: its folder's ``template.yaml`` (description,
families, hardware, parameters with defaults) read without rendering, the `TemplateInfo`
a registry answers with, the type check of a suite's parameters against the defaults,
and `render_context`, the variables a template is rendered with."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import TemplateError
from ..model import HARDWARE_KINDS, TestSpec

__all__ = ["HASH_HEX_CHARS", "METADATA_FILE", "TemplateInfo", "TemplateParameter", "render_context"]

METADATA_FILE = "template.yaml"
#: content_hash is the first HASH_HEX_CHARS hex digits of a sha256.
HASH_HEX_CHARS = 16


@dataclass(frozen=True)
class TemplateParameter:
    """One knob a template offers a suite, with its default."""

    name: str
    default: Any
    description: str = ""

    def __str__(self) -> str:
        """Its default, as a listing shows it."""
        return repr(self.default)


@dataclass(frozen=True)
class TemplateInfo:
    """What a template is for, read from its folder's template.yaml, and its content hash.

    ``content_hash`` is the first 16 hex digits of a sha256 over the parameter defaults
    (as sorted JSON), the template's source and the sources of the templates it includes,
    so editing a default or a partial changes the hash of every template it affects.
    """

    name: str
    description: str
    families: tuple[str, ...]
    hardware: tuple[str, ...]
    parameters: Mapping[str, TemplateParameter]
    path: Path
    content_hash: str

    def defaults(self) -> dict[str, Any]:
        """Parameter name -> default value."""
        return {p.name: p.default for p in self.parameters.values()}

    def supports(self, family: str, hardware: str) -> bool:
        return family in self.families and hardware in self.hardware


@dataclass(frozen=True)
class _Metadata:
    description: str = ""
    families: tuple[str, ...] = ()
    hardware: tuple[str, ...] = ()
    parameters: Mapping[str, TemplateParameter] = field(default_factory=dict)


def _string_list(value: Any, what: str, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TemplateError(f"{where}: {what} must be a list of strings")
    return tuple(value)


def _parse_parameters(raw: Any, where: str) -> dict[str, TemplateParameter]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise TemplateError(f"{where}: parameters must be a mapping of name -> {{default, description}}")
    params = {}
    for name, spec in raw.items():
        if not isinstance(spec, dict) or "default" not in spec:
            raise TemplateError(f"{where}: parameter {name} needs a default")
        params[str(name)] = TemplateParameter(str(name), spec["default"], str(spec.get("description", "")))
    return params


def _parse_variant(raw: Any, where: str) -> _Metadata:
    if not isinstance(raw, dict):
        raise TemplateError(f"{where}: must be a mapping")
    hardware = _string_list(raw.get("hardware", []), "hardware", where)
    unknown = sorted(set(hardware) - set(HARDWARE_KINDS))
    if unknown:
        raise TemplateError(f"{where}: unknown hardware {unknown}; known: {list(HARDWARE_KINDS)}")
    return _Metadata(
        description=str(raw.get("description", "")),
        families=_string_list(raw.get("families", []), "families", where),
        hardware=hardware,
        parameters=_parse_parameters(raw.get("parameters"), where),
    )


def _parse_metadata_file(path: Path) -> dict[str, _Metadata]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise TemplateError(f"{path}: cannot read template metadata: {exc}") from exc
    variants = data.get("variants", {}) if isinstance(data, dict) else None
    if not isinstance(variants, dict):
        raise TemplateError(f"{path}: expected a mapping 'variants: {{name: {{...}}}}'")
    return {str(k): _parse_variant(v, f"{path}: variants.{k}") for k, v in variants.items()}


def _same_kind(default: Any, value: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def _check_parameter_types(info: TemplateInfo, params: Mapping[str, Any]) -> None:
    """A suite's value must have its default's type (an int may stand for a float), so a
    typo fails at render time rather than inside a worker. Unknown names pass through."""
    for key, value in params.items():
        declared = info.parameters.get(key)
        if declared is None or declared.default is None or _same_kind(declared.default, value):
            continue
        kind = type(declared.default).__name__
        raise TemplateError(
            f"template {info.name}: parameter {key} must be a {kind} like its default {declared.default!r}, got {value!r}"
        )


def render_context(spec: TestSpec, info: TemplateInfo) -> dict[str, Any]:
    """What a template sees: the spec as a dict, its main fields at top level, and
    ``params``: the spec's parameters merged over the template's defaults."""
    return {
        "spec": spec.to_dict(),
        "template": info.name,
        "test_id": spec.test_id,
        "model": spec.model,
        "family": spec.family,
        "hardware": spec.hardware,
        "batch_size": spec.batch_size,
        "precision": spec.precision,
        "iterations": spec.iterations,
        "warmup": spec.warmup,
        "timeout_s": spec.timeout_s,
        "params": {**info.defaults(), **dict(spec.params)},
    }
