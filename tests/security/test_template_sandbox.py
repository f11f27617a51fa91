"""Templates are rendered in a sandbox: a name can only reach a file inside a template root,
the published Jinja sandbox escapes are refused, no single expression can build a huge
value, every render has a time limit and an output cap, and a suite's values (model names,
params) reach the source only as Python literals."""

from __future__ import annotations

import ast
import time
import tomllib
from pathlib import Path

import jinja2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dtf.errors import SuiteError, TemplateError, TemplateNotFound
from dtf.model import TestSpec
from dtf.suite import expand_suite, parse_suite
from dtf.templates import MAX_OUTPUT_BYTES, TemplateRegistry

from .conftest import TEMPLATES

REPO = Path(__file__).resolve().parents[2]


def test_jinja2_is_pinned_at_3_1_6_or_later_and_installed_so() -> None:
    """3.1.5 fixed CVE-2024-56201 and CVE-2024-56326, 3.1.6 fixed CVE-2025-27516."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "jinja2>=3.1.6" in [d.replace(" ", "").lower() for d in deps]
    assert tuple(int(p) for p in jinja2.__version__.split(".")[:3]) >= (3, 1, 6)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "roots" / "fam").mkdir(parents=True)
    return tmp_path / "roots"


def registry_with(root: Path, sources: dict[str, str], **kwargs: object) -> TemplateRegistry:
    for name, text in sources.items():
        (root / "fam" / f"{name}.py.j2").write_text(text)
    return TemplateRegistry([root], include_builtin=False, **kwargs)  # type: ignore[arg-type]


# -- names --------------------------------------------------------------------------------------------

HOSTILE_NAMES = [
    "../x", "../../etc/passwd", "/etc/passwd", "fam/../fam/ok", "fam/ok/../../x", "fam\\ok", "fam/ok\x00",
    "fam\x00/ok", "%2e%2e/x", "fam/%2e%2e", "~/x", "C:\\x", "fam/ok.py.j2", "./fam/ok", "fam//ok", "fam/ok/",
    "fam/.ok", "fam/ok\n", " fam/ok", "fam/ok ", "fam/\u2024\u2024", "\uff0e\uff0e/x", "fam", "", "fam/_partial",
]  # fmt: skip


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_name_that_could_leave_the_root_is_template_not_found(root: Path, name: str) -> None:
    registry = registry_with(root, {"ok": "X = 1\n", "_partial": "Y = 2\n"})
    for call in (lambda: registry.info(name), lambda: registry.render_source(name, {}),
                 lambda: registry.resolve("fam", "cpu", explicit=name) if name else registry.info(name)):
        with pytest.raises(TemplateNotFound, match="^template not found: "):
            call()


@given(st.text(max_size=40))
@settings(max_examples=500, deadline=None)
def test_any_name_either_finds_a_template_inside_a_root_or_is_not_found(name: str) -> None:
    registry = TemplateRegistry([TEMPLATES])
    try:
        info = registry.info(name)
    except TemplateNotFound as exc:
        assert str(exc).startswith("template not found: ") and "\n" not in str(exc)
        return
    assert any(info.path.is_relative_to(r) for r in registry.roots)


def test_symlinks_out_of_the_root_are_not_found(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.py.j2").write_text("SECRET = 'from outside'\n")
    (root / "fam" / "passwd.py.j2").symlink_to("/etc/passwd")
    (root / "fam" / "leak.py.j2").symlink_to(outside / "secret.py.j2")
    (root / "linked").symlink_to(outside, target_is_directory=True)
    (root / "fam" / "relative.py.j2").symlink_to(Path("..") / ".." / "outside" / "secret.py.j2")
    registry = TemplateRegistry([root], include_builtin=False)
    assert registry.names() == []
    for name in ("fam/passwd", "fam/leak", "linked/secret", "fam/relative"):
        with pytest.raises(TemplateNotFound, match=f"^template not found: {name}"):
            registry.render_source(name, {})


@pytest.mark.parametrize("statement", [
    "{% include '../../etc/passwd' %}", "{% include '/etc/passwd' %}", "{% import 'fam/../../x' as m %}",
    "{% from '..\\\\x' import y %}", "{% extends 'fam/_missing' %}", "{% include ['a/../b', 'c\\x00d'] %}",
])  # fmt: skip
def test_includes_imports_and_extends_pass_the_same_name_checks(root: Path, statement: str) -> None:
    registry = registry_with(root, {"inc": statement + "\n"})
    with pytest.raises(TemplateError, match="template not found|templates given were found"):
        registry.render_source("fam/inc", {})


def test_a_file_name_holding_code_is_never_loaded(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CVE-2024-56201: a template file name could inject code into the compiled module."""
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "pwned"
    evil = "x');import os;os.system('touch pwned');('"
    (root / "fam" / f"{evil}.py.j2").write_text("X = 1\n")
    registry = TemplateRegistry([root], include_builtin=False)
    assert registry.names() == []
    with pytest.raises(TemplateNotFound):
        registry.render_source(f"fam/{evil}", {})
    assert not marker.exists()


def test_a_suite_naming_a_hostile_template_is_a_suite_error_naming_the_model() -> None:
    for template in ("../../etc/passwd", "sec/../../x", "/etc/passwd", "a\\b"):
        doc = {"name": "s", "models": [{"name": "m", "template": template}], "hardware": ["cpu"], "batch_sizes": [1]}
        with pytest.raises(SuiteError, match=r"s\.yaml: models\[0\]\.template: "):
            parse_suite(doc, "s.yaml")
    doc = {"name": "s", "models": [{"name": "m", "template": "a/b/c"}], "hardware": ["cpu"], "batch_sizes": [1]}
    registry = TemplateRegistry([TEMPLATES])
    with pytest.raises(SuiteError, match=r"models\[0\]\.template: template not found: a/b/c"):
        expand_suite(parse_suite(doc, "s.yaml"), resolve_template=registry.resolve)


# -- the published escapes, and more ---------------------------------------------------------------------

ESCAPES = {
    "mro_subclasses": "{{ ''.__class__.__mro__[1].__subclasses__()|pyrepr }}",
    "getitem_dunder": "{{ x['__class__']['__base__']|pyrepr }}",
    "attr_filter": "{{ (x|attr('__class__'))|pyrepr }}",
    "attr_format_cve_2025_27516": "{{ ('{0.__class__.__init__.__globals__}'|attr('format'))(x)|pyrepr }}",
    "stored_format_cve_2024_56326": "{% set f = '{0.__class__.__init__.__globals__}'.format %}{{ f(x)|pyrepr }}",
    "format_map": "{{ '{a.__class__.__mro__}'.format_map({'a': x})|pyrepr }}",
    "format_filter": "{{ ('%s'|format(x.__class__))|pyrepr }}",
    "cycler_globals": "{{ cycler.__init__.__globals__.os.popen('touch ' ~ marker).read()|pyrepr }}",
    "joiner_globals": "{{ joiner.__init__.__globals__.os.system('touch ' ~ marker)|pyrepr }}",
    "namespace_globals": "{{ namespace.__init__.__globals__.sys.modules.os.system('touch ' ~ marker)|pyrepr }}",
    "lipsum_globals": "{{ lipsum.__globals__.os.system('touch ' ~ marker)|pyrepr }}",
    "range_self": "{{ range.__self__.__import__('os').system('touch ' ~ marker)|pyrepr }}",
    "self_globals": "{{ self.__init__.__globals__.__builtins__.__import__('os').system('touch ' ~ marker)|pyrepr }}",
    "self_context": "{{ self._TemplateReference__context.environment|pyrepr }}",
    "dict_init": "{{ dict.__init__.__globals__|pyrepr }}",
    "loop_class": "{% for i in range(1) %}{{ loop.__class__.__init__.__globals__|pyrepr }}{% endfor %}",
    "namespace_dunder_set": "{% set ns = namespace() %}{% set ns.__class__ = 1 %}{{ ns|pyrepr }}",
    "mutate_params": "{{ params.update({'injected': 1})|pyrepr }}",
    "mutate_list": "{{ params.items.append(1)|pyrepr }}",
    "config": "{{ config.__class__|pyrepr }}",
    "request": "{{ request.application.__globals__|pyrepr }}",
    "raw_value": "MODEL = {{ model }}",
}


@pytest.mark.parametrize("payload", sorted(ESCAPES))
def test_sandbox_escape_payloads_are_refused_and_never_run(root: Path, tmp_path: Path, payload: str) -> None:
    marker = tmp_path / "pwned"
    registry = registry_with(root, {"escape": ESCAPES[payload] + "\n"})
    context = {"x": 1, "model": "m", "marker": str(marker), "params": {"items": [1], "a": 1}}
    with pytest.raises(TemplateError, match="^template fam/escape line 1: "):
        registry.render_source("fam/escape", context)
    assert not marker.exists()
    assert context["params"] == {"items": [1], "a": 1}


# -- sizes and time ---------------------------------------------------------------------------------------

BOMBS = {
    "repeat": "{{ ('x' * 1000000000)|pyrepr }}",
    "padding_method": "{{ 'x'.ljust(1000000000)|pyrepr }}",
    "percent_width": "{{ ('%1000000000s' % 'x')|length|pyrepr }}",
    "format_width": "{{ '{:>1000000000}'.format('x')|length|pyrepr }}",
    "join": "{{ ('x' * 1000000).join(['a'] * 100000)|length|pyrepr }}",
    "replace": "{{ ('x' * 1000000).replace('x', 'y' * 1000)|length|pyrepr }}",
    "translate": "{{ ('x' * 1000000).translate({120: 'y' * 1000})|length|pyrepr }}",
    "to_bytes": "{{ (1).to_bytes(1000000000, 'big')|length|pyrepr }}",
    "power": "{{ (10 ** 100000000)|pyrepr }}",
    "product": "{% set n = namespace(x=2 ** 4000) %}{% for i in range(40) %}{% set n.x = n.x * n.x %}{% endfor %}",
    "concat_chain": "{% set a = 'x' * 1000000 %}{% set b = a ~ a %}{% set c = b ~ b %}{{ c|length|pyrepr }}",
    "concat_container": "{{ (([('x' * 1000000)] * 1000) ~ '')|length|pyrepr }}",
    "plus_chain": "{% set a = 'x' * 1000000 %}{% set b = a + a %}{% set c = b + b %}{{ c|length|pyrepr }}",
    "pyrepr_of_references": "{{ ([('x' * 1000000)] * 100000)|pyrepr }}",
    "many_small_outputs": "{% for i in range(100000) %}{{ 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'|pyrepr }}{% endfor %}",
}


@pytest.mark.parametrize("bomb", sorted(BOMBS))
def test_no_expression_builds_a_value_or_output_over_the_cap(root: Path, bomb: str) -> None:
    registry = registry_with(root, {"bomb": BOMBS[bomb] + "\n"})
    started = time.monotonic()
    with pytest.raises(TemplateError, match=r"^template fam/bomb"):
        registry.render_source("fam/bomb", {})
    assert time.monotonic() - started < 5


LOOPS = {
    "nested_ranges": "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
    "nested_data": "{% for a in big %}{% for b in big %}{% for c in big %}{% endfor %}{% endfor %}{% endfor %}",
    "exponential_macro": "{% macro f(n) %}{% if n %}{% set _ = f(n - 1) %}{% set _ = f(n - 1) %}{% endif %}"
                         "{% endmacro %}{% set _ = f(60) %}",
}


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_a_render_that_runs_past_its_time_limit_is_stopped(root: Path, loop: str) -> None:
    registry = registry_with(root, {"loop": LOOPS[loop] + "\n"}, render_timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(TemplateError, match=r"^template fam/loop: rendering took longer than 0\.5 s$"):
        registry.render_source("fam/loop", {"big": list(range(10_000))})
    assert time.monotonic() - started < 3


def test_the_time_limit_leaves_the_next_render_alone(root: Path) -> None:
    registry = registry_with(root, {"slow": LOOPS["nested_ranges"] + "\n", "ok": "X = {{ 1|pyrepr }}\n"},
                             render_timeout_s=0.3)
    with pytest.raises(TemplateError, match="took longer"):
        registry.render_source("fam/slow", {})
    for _ in range(200):
        assert registry.render_source("fam/ok", {}) == "X = 1\n"
    time.sleep(0.4)  # past the old deadline: nothing may fire late


def test_the_builtin_templates_render_far_inside_the_limits() -> None:
    registry = TemplateRegistry()
    for info in registry.list():
        kind = info.hardware[0] if info.hardware else "cpu"
        spec = TestSpec(f"m/{kind}/bs4/fp32", "m", info.families[0] if info.families else "unknown", kind, 4,
                        "fp32", info.name)
        started = time.monotonic()
        source = registry.render(spec).source
        assert time.monotonic() - started < 1.0 and len(source.encode()) < MAX_OUTPUT_BYTES // 8, info.name


# -- values from a suite ----------------------------------------------------------------------------------

@given(st.text(max_size=50), st.text(max_size=50))
@settings(max_examples=200, deadline=None)
def test_suite_values_reach_the_source_only_as_literals(test_id: str, marker: str) -> None:
    """Whatever a suite puts in a name or a param is one string constant of the rendered test."""
    registry = TemplateRegistry([TEMPLATES])
    for value in (marker, "{{ 7*7 }}'); import os; os.system('id') #", '"""\n' + marker):
        spec = TestSpec(test_id, "m", "sec", "cpu", 1, "fp32", "sec/marker", params={"marker": value})
        tree = ast.parse(registry.render(spec).source)
        constants = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        assert {test_id, value} <= constants
        assert not any(isinstance(n, ast.Import) and n.names[0].name == "os" for n in ast.walk(tree))
