"""The template registry, its sandbox, and the built-in templates run for real.

Every built-in template is rendered for each hardware kind it supports at batch sizes 1
and 4 and every precision; the numpy ones run in a subprocess exactly as a worker runs
them, the torch ones run where torch is installed and must skip cleanly where it is not.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dtf.errors import HardwareError, TemplateError, TemplateNotFound
from dtf.model import HARDWARE_KINDS, PRECISIONS, TestSpec
from dtf.templates import (
    HASH_HEX_CHARS,
    TemplateInfo,
    TemplateRegistry,
    builtin_root,
    pyrepr,
)

FIXTURES = Path(__file__).parent / "fixtures" / "templates"
HAS_TORCH = importlib.util.find_spec("torch") is not None
FAMILIES = ("text_embedding", "text_generation", "vision", "audio", "multimodal")
NUMPY_TEMPLATES = [f"{family}/cpu" for family in FAMILIES] + ["generic/default"]
TORCH_TEMPLATES = [f"{family}/torch" for family in FAMILIES] + ["generic/torch"]
# The synthetic workloads; the real-model templates (models/*) are tested in tests/models/.
BUILTINS: list[TemplateInfo] = [i for i in TemplateRegistry().list() if not i.name.startswith(("models/", "pytest/"))]
LATENCY_METRICS = ("latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "throughput_items_s")
NASTY_MODEL_NAMES = [
    "x'); import os; os.system('echo pwned'); ('",
    'x"); import os; os.system("echo pwned"); ("',
    'x"""\nimport os\nos.system("echo pwned")\n"""',
    "x\\'; os.system('echo pwned') #",
    "{{ 7*7 }} {% raw %} \x00 \u2028 é",
]


def make_spec(template: str = "", hardware: str = "cpu", **fields: Any) -> TestSpec:
    family = fields.pop("family", template.split("/")[0] if template else "text_embedding")
    base: dict[str, Any] = {
        "test_id": "t-0001", "model": "tiny/model", "family": family, "hardware": hardware,
        "batch_size": 4, "precision": "fp32", "template": template, "iterations": 10, "warmup": 2,
    }  # fmt: skip
    return TestSpec(**{**base, **fields})


def run_rendered(source: str, tmp_path: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a rendered test as a worker does: its own process, a result file to read back."""
    script, result = tmp_path / "test_script.py", tmp_path / "result.json"
    script.write_text(source, encoding="utf-8")
    full_env = {**os.environ, "DTF_RESULT_FILE": str(result), **(env or {})}
    proc = subprocess.run(
        [sys.executable, str(script)], env=full_env, capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False
    )
    assert result.exists(), f"no result file; stderr:\n{proc.stderr[-4000:]}"
    outcome: dict[str, Any] = json.loads(result.read_text(encoding="utf-8"))
    outcome["stderr"], outcome["stdout"] = proc.stderr, proc.stdout
    return outcome


def assert_passed_with_latency(outcome: dict[str, Any]) -> None:
    assert outcome["outcome"] == "passed", f"{outcome['error']}\n{outcome['stderr'][-4000:]}"
    for name in LATENCY_METRICS:
        assert outcome["metrics"][name] > 0, name


@pytest.fixture(scope="module")
def registry() -> TemplateRegistry:
    return TemplateRegistry()


@pytest.fixture(scope="module")
def fixture_registry() -> TemplateRegistry:
    return TemplateRegistry([FIXTURES])


# --- the built-in templates ------------------------------------------------------------


def test_the_builtin_root_is_the_repository_templates_folder() -> None:
    assert builtin_root() == Path(__file__).resolve().parent.parent / "templates"


def test_every_family_has_a_numpy_and_a_torch_template_and_generic_has_webgpu() -> None:
    names = {info.name for info in BUILTINS}
    assert names == set(NUMPY_TEMPLATES) | set(TORCH_TEMPLATES) | {"generic/webgpu"}


@pytest.mark.parametrize("info", BUILTINS, ids=lambda i: i.name)
def test_metadata_describes_families_hardware_and_parameter_defaults(info: TemplateInfo) -> None:
    assert info.description and info.families and info.hardware
    assert set(info.hardware) <= set(HARDWARE_KINDS)
    assert info.parameters and all(p.description for p in info.parameters.values())
    assert len(info.content_hash) == HASH_HEX_CHARS and int(info.content_hash, 16) >= 0
    assert info.path.is_file() and info.path.name.endswith(".py.j2")


def test_torch_templates_serve_cpu_and_every_gpu_kind(registry: TemplateRegistry) -> None:
    for name in TORCH_TEMPLATES:
        assert registry.info(name).hardware == ("cpu", "cuda", "rocm", "mps")


RENDER_CASES = [
    pytest.param(info.name, hw, batch, precision, id=f"{info.name}-{hw}-b{batch}-{precision}")
    for info in BUILTINS
    for hw in info.hardware
    for batch in (1, 4)
    for precision in PRECISIONS
]


@pytest.mark.parametrize(("name", "hardware", "batch", "precision"), RENDER_CASES)
def test_every_builtin_renders_to_python_that_compiles(
    registry: TemplateRegistry, name: str, hardware: str, batch: int, precision: str
) -> None:
    spec = make_spec(name, hardware, batch_size=batch, precision=precision)
    rendered = registry.render(spec)
    compile(rendered.source, f"<{name}>", "exec")
    assert rendered.template_hash == registry.info(name).content_hash
    assert f"BATCH_SIZE = {batch}\n" in rendered.source
    assert f"PRECISION = {precision!r}\n" in rendered.source
    assert "from dtf import harness" in rendered.source
    assert "{{" not in rendered.source and "{%" not in rendered.source


NUMPY_RUNS = [
    pytest.param(name, batch, precision, id=f"{name}-b{batch}-{precision}")
    for name in NUMPY_TEMPLATES
    for batch in (1, 4)
    for precision in PRECISIONS
]


@pytest.mark.parametrize(("name", "batch", "precision"), NUMPY_RUNS)
def test_numpy_templates_pass_for_real_and_report_latency(
    registry: TemplateRegistry, tmp_path: Path, name: str, batch: int, precision: str
) -> None:
    rendered = registry.render(make_spec(name, "cpu", batch_size=batch, precision=precision))
    outcome = run_rendered(rendered.source, tmp_path)
    assert_passed_with_latency(outcome)
    metrics = outcome["metrics"]
    assert metrics["param_count"] > 0 and metrics["weight_bytes"] > 0
    assert metrics["determinism_max_abs_diff"] == 0.0
    assert len(metrics["latencies_ms"]) == 10
    if precision != "fp32":
        assert metrics["min_cosine_vs_fp32"] > 0.9


def test_int8_weights_take_about_a_quarter_of_the_fp32_bytes(registry: TemplateRegistry, tmp_path: Path) -> None:
    sizes = {}
    for precision in ("fp32", "int8"):
        rendered = registry.render(make_spec("generic/default", precision=precision, iterations=2, warmup=0))
        (tmp_path / precision).mkdir()
        sizes[precision] = run_rendered(rendered.source, tmp_path / precision)["metrics"]["weight_bytes"]
    assert sizes["int8"] < 0.3 * sizes["fp32"]


def test_family_specific_metrics_are_reported(registry: TemplateRegistry, tmp_path: Path) -> None:
    expected = {
        "text_embedding/cpu": "tokens_per_s",
        "text_generation/cpu": "tokens_per_s",
        "vision/cpu": "images_per_s",
        "audio/cpu": "realtime_factor",
        "multimodal/cpu": "similarities_per_s",
    }
    for name, metric in expected.items():
        workdir = tmp_path / name.replace("/", "_")
        workdir.mkdir()
        outcome = run_rendered(registry.render(make_spec(name, iterations=2, warmup=0)).source, workdir)
        assert outcome["metrics"][metric] > 0, name


def test_a_failed_property_check_makes_the_test_fail_not_pass(registry: TemplateRegistry, tmp_path: Path) -> None:
    source = registry.render(make_spec("generic/default", iterations=2, warmup=0)).source
    broken = source.replace("return self.cast(e / e.sum(axis=axis, keepdims=True))", "return self.cast(e)")
    assert broken != source
    outcome = run_rendered(broken, tmp_path)
    assert outcome["outcome"] == "failed"
    assert "rows sum to 1" in outcome["error"]


@pytest.mark.skipif(HAS_TORCH, reason="torch is installed here")
@pytest.mark.parametrize("hardware", ["cpu", "cuda", "rocm", "mps"])
@pytest.mark.parametrize("name", TORCH_TEMPLATES)
def test_torch_templates_skip_when_torch_is_not_installed(
    registry: TemplateRegistry, tmp_path: Path, name: str, hardware: str
) -> None:
    outcome = run_rendered(registry.render(make_spec(name, hardware, batch_size=1)).source, tmp_path)
    assert outcome["outcome"] == "skipped"
    assert outcome["error"] == "torch not installed"


@pytest.mark.slow
@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("name", TORCH_TEMPLATES)
def test_torch_templates_pass_on_cpu_when_torch_is_installed(
    registry: TemplateRegistry, tmp_path: Path, name: str, precision: str
) -> None:
    outcome = run_rendered(registry.render(make_spec(name, "cpu", precision=precision)).source, tmp_path)
    assert_passed_with_latency(outcome)


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
@pytest.mark.parametrize("hardware", ["cuda", "rocm", "mps"])
def test_torch_templates_run_or_skip_with_a_reason_on_gpu_kinds(
    registry: TemplateRegistry, tmp_path: Path, hardware: str
) -> None:
    outcome = run_rendered(registry.render(make_spec("generic/torch", hardware)).source, tmp_path)
    if outcome["outcome"] == "skipped":
        assert "not available to torch" in outcome["error"] or "build" in outcome["error"]
    else:
        assert_passed_with_latency(outcome)


def test_webgpu_template_skips_with_a_reason_when_no_browser_is_found(
    registry: TemplateRegistry, tmp_path: Path
) -> None:
    source = registry.render(make_spec("generic/webgpu", "webgpu")).source
    empty = tmp_path / "empty-path"
    empty.mkdir()
    (tmp_path / "run").mkdir()
    outcome = run_rendered(source, tmp_path / "run", env={"PATH": str(empty), "DTF_CHROMIUM": ""})
    assert outcome["outcome"] == "skipped"
    assert "Chromium" in outcome["error"]


def find_chromium() -> str | None:
    explicit = os.environ.get("DTF_CHROMIUM")
    names = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
    return explicit or next((shutil.which(n) for n in names if shutil.which(n)), None)


@pytest.mark.skipif(find_chromium() is None, reason="no Chromium here (set DTF_CHROMIUM to try one)")
def test_webgpu_template_runs_a_shader_in_headless_chromium_or_skips_without_an_adapter(
    registry: TemplateRegistry, tmp_path: Path
) -> None:
    spec = make_spec("generic/webgpu", "webgpu", params={"browser_timeout_s": 60})
    outcome = run_rendered(registry.render(spec).source, tmp_path, env={"DTF_CHROMIUM": str(find_chromium())})
    if outcome["outcome"] == "skipped":
        assert "adapter" in outcome["error"] or "navigator.gpu" in outcome["error"]
    else:
        assert_passed_with_latency(outcome)


def test_webgpu_template_skips_precisions_other_than_fp32(registry: TemplateRegistry, tmp_path: Path) -> None:
    outcome = run_rendered(registry.render(make_spec("generic/webgpu", "webgpu", precision="fp16")).source, tmp_path)
    assert outcome["outcome"] == "skipped"
    assert "fp32 only" in outcome["error"]


# --- resolution --------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_cpu_resolves_to_the_numpy_template_of_the_family(registry: TemplateRegistry, family: str) -> None:
    assert registry.resolve(family, "cpu") == f"{family}/cpu"


@pytest.mark.parametrize("hardware", ["cuda", "rocm", "mps"])
@pytest.mark.parametrize("family", FAMILIES)
def test_gpu_kinds_resolve_to_the_torch_template_of_the_family(
    registry: TemplateRegistry, family: str, hardware: str
) -> None:
    assert registry.resolve(family, hardware) == f"{family}/torch"


@pytest.mark.parametrize(
    ("hardware", "expected"),
    [("cpu", "generic/default"), ("cuda", "generic/torch"), ("mps", "generic/torch"), ("webgpu", "generic/webgpu")],
)
def test_an_unknown_family_falls_back_to_generic_templates(
    registry: TemplateRegistry, hardware: str, expected: str
) -> None:
    assert registry.resolve("graph_neural_net", hardware) == expected


def test_a_known_family_on_webgpu_resolves_to_the_generic_webgpu_probe(registry: TemplateRegistry) -> None:
    assert registry.resolve("vision", "webgpu") == "generic/webgpu"


def test_an_explicit_template_wins_over_resolution(registry: TemplateRegistry) -> None:
    assert registry.resolve("vision", "cuda", explicit="generic/default") == "generic/default"


def test_an_unknown_explicit_template_is_not_found_by_name(registry: TemplateRegistry) -> None:
    with pytest.raises(TemplateNotFound, match="template not found: vision/quantum"):
        registry.resolve("vision", "cpu", explicit="vision/quantum")


def test_an_unknown_hardware_kind_is_a_hardware_error(registry: TemplateRegistry) -> None:
    with pytest.raises(HardwareError, match="tpu"):
        registry.resolve("vision", "tpu")


def test_a_template_from_another_folder_may_serve_a_family(fixture_registry: TemplateRegistry) -> None:
    assert fixture_registry.resolve("extra", "cpu") == "extra/echo"
    assert fixture_registry.resolve("text_embedding", "webgpu") == "extra/echo"
    assert fixture_registry.resolve("text_embedding", "cpu") == "text_embedding/cpu"


def test_with_no_generic_template_resolution_fails_clearly(tmp_path: Path) -> None:
    bare = TemplateRegistry([tmp_path], include_builtin=False)
    with pytest.raises(TemplateNotFound, match="template not found: generic/default"):
        bare.resolve("vision", "cpu")


# --- rendering -------------------------------------------------------------------------


def test_render_resolves_the_template_when_the_spec_names_none(registry: TemplateRegistry) -> None:
    rendered = registry.render(make_spec("", "cuda", family="vision"))
    assert rendered.spec.template == "vision/torch"
    assert rendered.template_hash == registry.info("vision/torch").content_hash


def test_spec_params_are_merged_over_the_template_defaults(fixture_registry: TemplateRegistry) -> None:
    source = fixture_registry.render(make_spec("extra/echo", params={"ratio": 2, "unknown": [1]})).source
    assert "GREETING = 'hello'" in source
    assert "RATIO = 2\n" in source
    spec = ast.literal_eval(source.split("SPEC = ", 1)[1].strip())
    assert spec["test_id"] == "t-0001" and spec["params"] == {"ratio": 2, "unknown": [1]}


def test_a_param_of_the_wrong_type_is_refused_at_render_time(registry: TemplateRegistry) -> None:
    with pytest.raises(TemplateError, match="parameter hidden must be a int"):
        registry.render(make_spec("text_embedding/cpu", params={"hidden": "wide"}))


def test_a_suite_param_scales_the_model(registry: TemplateRegistry, tmp_path: Path) -> None:
    small = make_spec("text_embedding/cpu", params={"hidden": 32, "seq_len": 8}, iterations=2, warmup=0)
    outcome = run_rendered(registry.render(small).source, tmp_path)
    assert outcome["outcome"] == "passed", outcome["error"]
    (tmp_path / "default").mkdir()
    default = run_rendered(registry.render(make_spec("text_embedding/cpu", iterations=2, warmup=0)).source, tmp_path / "default")
    assert outcome["metrics"]["param_count"] < default["metrics"]["param_count"]


@pytest.mark.parametrize("model", NASTY_MODEL_NAMES)
def test_a_model_name_with_code_in_it_renders_as_a_harmless_string(
    registry: TemplateRegistry, model: str
) -> None:
    plain = registry.render(make_spec("text_embedding/cpu", model="plain")).source
    nasty = registry.render(make_spec("text_embedding/cpu", model=model)).source
    tree = ast.parse(nasty)
    assigned = [n for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "MODEL"]
    assert len(assigned) == 1 and ast.literal_eval(assigned[0].value) == model

    class Anonymise(ast.NodeTransformer):
        def visit_Constant(self, node: ast.Constant) -> ast.Constant:
            return ast.Constant("<model>") if node.value in (model, "plain") else node

    assert ast.dump(Anonymise().visit(tree)) == ast.dump(Anonymise().visit(ast.parse(plain)))


def test_a_rendered_test_with_a_hostile_model_name_runs_without_executing_it(
    registry: TemplateRegistry, tmp_path: Path
) -> None:
    spec = make_spec("generic/default", model=NASTY_MODEL_NAMES[0], iterations=2, warmup=0)
    outcome = run_rendered(registry.render(spec).source, tmp_path)
    assert outcome["outcome"] == "passed"
    assert "pwned" not in outcome["stdout"]


def test_pyrepr_writes_python_literals_of_plain_data() -> None:
    value = {"a": [1, 2.5, None, True], "b": ("x",), 3: {"nested": "q'\"\n"}}
    assert ast.literal_eval(pyrepr(value)) == value
    assert pyrepr(float("nan")) == "float('nan')" and pyrepr(float("-inf")) == "float('-inf')"


@pytest.mark.parametrize(
    "value",
    [object(), type("Sneaky", (str,), {"__repr__": lambda self: "__import__('os')"})("x"), {1.5j: 1}, b"bytes"],
    ids=["object", "str-subclass", "complex-key", "bytes"],
)
def test_pyrepr_refuses_anything_but_plain_data(value: object) -> None:
    with pytest.raises(TemplateError, match="pyrepr writes only"):
        pyrepr(value)


# --- the sandbox -------------------------------------------------------------------------

TRAVERSAL_NAMES = [
    "../x", "../../etc/passwd", "/etc/passwd", "a\\b", "a\x00b", "text_embedding/../generic/default",
    "text_embedding/cpu.py.j2", "./text_embedding/cpu", "text_embedding//cpu", "a/b/c", "", "text_embedding",
]  # fmt: skip


@pytest.mark.parametrize("name", TRAVERSAL_NAMES)
def test_names_that_could_leave_a_root_are_not_found(registry: TemplateRegistry, name: str) -> None:
    with pytest.raises(TemplateNotFound, match="^template not found: "):
        registry.info(name)
    with pytest.raises(TemplateNotFound, match="^template not found: "):
        registry.render_source(name, {})
    if name:  # an empty explicit name means "resolve one"
        with pytest.raises(TemplateNotFound, match="^template not found: "):
            registry.resolve("vision", "cpu", explicit=name)


def test_a_symlink_pointing_outside_its_root_is_not_found(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.py.j2").write_text("SECRET = 1\n")
    root = tmp_path / "root"
    (root / "fam").mkdir(parents=True)
    (root / "fam" / "leak.py.j2").symlink_to(outside / "secret.py.j2")
    (root / "linked").symlink_to(outside, target_is_directory=True)
    registry = TemplateRegistry([root], include_builtin=False)
    for name in ("fam/leak", "linked/secret"):
        with pytest.raises(TemplateNotFound, match=f"^template not found: {name}"):
            registry.render_source(name, {})
        with pytest.raises(TemplateNotFound):
            registry.info(name)


def test_a_symlink_inside_its_root_is_followed(tmp_path: Path) -> None:
    (tmp_path / "fam").mkdir()
    (tmp_path / "fam" / "real.py.j2").write_text("X = {{ 1|pyrepr }}\n")
    (tmp_path / "fam" / "alias.py.j2").symlink_to(tmp_path / "fam" / "real.py.j2")
    registry = TemplateRegistry([tmp_path], include_builtin=False)
    assert registry.render_source("fam/alias", {}) == "X = 1\n"


def test_partials_can_be_included_but_not_rendered_listed_or_resolved(registry: TemplateRegistry) -> None:
    for name in ("_shared/header", "text_embedding/_model"):
        with pytest.raises(TemplateNotFound, match="partials can only be included"):
            registry.info(name)
        with pytest.raises(TemplateNotFound):
            registry.resolve("vision", "cpu", explicit=name)
    assert not any(part.startswith("_") for info in registry.list() for part in info.name.split("/"))


@pytest.mark.parametrize("payload", ["mro", "attr", "format", "globals", "mutate"])
def test_sandbox_escape_payloads_are_refused_not_executed(
    fixture_registry: TemplateRegistry, tmp_path: Path, payload: str
) -> None:
    marker = tmp_path / "pwned"
    context = {"x": 1, "marker": str(marker), "params": {"a": 1}}
    with pytest.raises(TemplateError, match=f"^template sandbox/{payload} line 2: "):
        fixture_registry.render_source(f"sandbox/{payload}", context)
    assert not marker.exists()
    assert context["params"] == {"a": 1}


def test_an_undefined_variable_names_the_template_and_line(fixture_registry: TemplateRegistry) -> None:
    with pytest.raises(TemplateError, match="^template sandbox/undefined line 3: 'nope' is undefined$"):
        fixture_registry.render_source("sandbox/undefined", {"model": "m"})


def test_a_syntax_error_names_the_template_and_line(fixture_registry: TemplateRegistry) -> None:
    with pytest.raises(TemplateError, match="^template sandbox/syntax line 3: "):
        fixture_registry.render_source("sandbox/syntax", {})


def test_a_value_placed_without_pyrepr_is_refused(fixture_registry: TemplateRegistry) -> None:
    with pytest.raises(TemplateError, match="line 2: a value placed in the source must pass through [|]pyrepr"):
        fixture_registry.render_source("sandbox/raw_value", {"model": "m"})


@pytest.mark.parametrize("name", ["sandbox/include_traversal", "sandbox/include_missing"])
def test_includes_go_through_the_same_name_checks(fixture_registry: TemplateRegistry, name: str) -> None:
    with pytest.raises(TemplateError, match=f"^template {name} line [23]: template not found: "):
        fixture_registry.render_source(name, {})


def test_output_over_the_size_cap_is_refused(fixture_registry: TemplateRegistry) -> None:
    with pytest.raises(TemplateError, match="over the 1048576-byte cap"):
        fixture_registry.render_source("sandbox/huge_output", {})


@pytest.mark.parametrize("name", ["sandbox/repeat_bomb", "sandbox/pad_bomb"])
def test_one_expression_cannot_build_a_huge_string(fixture_registry: TemplateRegistry, name: str) -> None:
    with pytest.raises(TemplateError, match=f"^template {name} line 2: "):
        fixture_registry.render_source(name, {})


def test_a_smaller_cap_can_be_set_per_registry(tmp_path: Path) -> None:
    registry = TemplateRegistry([tmp_path], include_builtin=False, max_output_bytes=10)
    (tmp_path / "fam").mkdir()
    (tmp_path / "fam" / "long.py.j2").write_text("X = 'more than ten bytes'\n")
    with pytest.raises(TemplateError, match="10-byte cap"):
        registry.render_source("fam/long", {})


# --- roots, overrides, metadata and caching -----------------------------------------------


def test_an_extra_root_overrides_a_builtin_of_the_same_name(fixture_registry: TemplateRegistry, tmp_path: Path) -> None:
    info = fixture_registry.info("text_embedding/cpu")
    assert info.path == (FIXTURES / "text_embedding" / "cpu.py.j2").resolve()
    assert info.hardware == ("cpu",) and "vocab_size" in info.parameters  # metadata kept from the built-in
    rendered = fixture_registry.render(make_spec("text_embedding/cpu"))
    assert "OVERRIDDEN = True" in rendered.source
    assert_passed_with_latency(run_rendered(rendered.source, tmp_path))


def test_an_extra_root_keeps_the_other_builtins(fixture_registry: TemplateRegistry, registry: TemplateRegistry) -> None:
    assert fixture_registry.info("vision/cpu") == registry.info("vision/cpu")
    assert {"extra/echo", "vision/cpu", "generic/webgpu"} <= {i.name for i in fixture_registry.list()}


def test_an_extra_root_that_is_not_a_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="is not a directory"):
        TemplateRegistry([tmp_path / "missing"])


def test_metadata_is_read_without_rendering_even_a_broken_template(fixture_registry: TemplateRegistry) -> None:
    info = fixture_registry.info("sandbox/syntax")
    assert info.families == ("sandbox",) and info.hardware == ()


def test_malformed_metadata_is_a_template_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "fam").mkdir()
    (tmp_path / "fam" / "x.py.j2").write_text("X = 1\n")
    (tmp_path / "fam" / "template.yaml").write_text("variants:\n  x:\n    hardware: [quantum]\n")
    with pytest.raises(TemplateError, match=r"template\.yaml: variants\.x: unknown hardware \['quantum'\]"):
        TemplateRegistry([tmp_path], include_builtin=False).info("fam/x")


def copy_builtins(target: Path) -> None:
    for path in builtin_root().rglob("*"):
        if path.is_file():
            dest = target / path.relative_to(builtin_root())
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(path.read_bytes())


def test_the_content_hash_follows_the_partials_a_template_includes(tmp_path: Path) -> None:
    copy_builtins(tmp_path)
    registry = TemplateRegistry([tmp_path], include_builtin=False)
    before = {i.name: i.content_hash for i in registry.list() if not i.name.startswith(("models/", "pytest/"))}
    assert before == {i.name: i.content_hash for i in BUILTINS}
    checks = tmp_path / "_shared" / "numpy_backend.py.j2"
    checks.write_text(checks.read_text() + "\n# changed\n")
    os.utime(checks, ns=(checks.stat().st_atime_ns, checks.stat().st_mtime_ns + 10**9))
    after = {i.name: i.content_hash for i in registry.list()}
    changed = {name for name in before if before[name] != after[name]}
    assert changed == set(NUMPY_TEMPLATES)


def test_the_content_hash_follows_the_parameter_defaults(tmp_path: Path) -> None:
    copy_builtins(tmp_path)
    registry = TemplateRegistry([tmp_path], include_builtin=False)
    before = registry.info("vision/cpu").content_hash
    metadata = tmp_path / "vision" / "template.yaml"
    metadata.write_text(metadata.read_text().replace("num_classes: {default: 10", "num_classes: {default: 11"))
    os.utime(metadata, ns=(metadata.stat().st_atime_ns, metadata.stat().st_mtime_ns + 10**9))
    assert registry.info("vision/cpu").content_hash != before


def test_compiled_templates_are_cached_until_their_file_changes(tmp_path: Path) -> None:
    (tmp_path / "fam").mkdir()
    path = tmp_path / "fam" / "t.py.j2"
    path.write_text("X = {{ 1|pyrepr }}\n")
    registry = TemplateRegistry([tmp_path], include_builtin=False)
    assert registry.render_source("fam/t", {}) == "X = 1\n"
    assert registry._env.get_template("fam/t") is registry._env.get_template("fam/t")
    path.write_text("X = {{ 2|pyrepr }}\n")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert registry.render_source("fam/t", {}) == "X = 2\n"


def test_a_new_override_in_an_earlier_root_takes_effect_at_once(tmp_path: Path, registry: TemplateRegistry) -> None:
    layered = TemplateRegistry([tmp_path])
    first = layered.render(make_spec("generic/default")).source
    assert first == registry.render(make_spec("generic/default")).source
    (tmp_path / "generic").mkdir()
    (tmp_path / "generic" / "default.py.j2").write_text("OVERRIDE = {{ model|pyrepr }}\n")
    assert layered.render(make_spec("generic/default")).source == "OVERRIDE = 'tiny/model'\n"


# --- a long-lived registry remembers lookups, and notices every change ----------------------

PARTIAL_USER = '{% include "shared/_part" %}X = {{ 1|pyrepr }}\n'
META = "variants:\n  t: {{description: {}, families: [fam], hardware: [cpu]}}\n"


def write_family(root: Path, description: str = "base") -> None:
    (root / "fam").mkdir(parents=True)
    (root / "shared").mkdir()
    (root / "fam" / "t.py.j2").write_text(PARTIAL_USER)
    (root / "fam" / "template.yaml").write_text(META.format(description))
    (root / "shared" / "_part.py.j2").write_text("# base part\n")


def warmed(*roots: Path) -> TemplateRegistry:
    """A registry that has rendered fam/t twice, so its lookups are remembered."""
    registry = TemplateRegistry(list(roots), include_builtin=False)
    for _ in range(2):
        assert registry.render(make_spec("fam/t")).source.endswith("X = 1\n")
    return registry


def test_a_remembered_render_resolves_no_path_and_walks_no_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_family(tmp_path)
    registry = warmed(tmp_path)
    calls: list[Path] = []
    monkeypatch.setattr("dtf.templates.registry._inside", lambda path, root: calls.append(path))
    monkeypatch.setattr(registry, "_filenames", lambda: pytest.fail("walked the roots without an error"))
    registry.render(make_spec("fam/t"))
    assert calls == []


@pytest.mark.parametrize("swap", ["template", "partial", "folder", "folder_moved_out_and_linked_back"])
def test_a_remembered_file_swapped_for_a_symlink_out_of_its_root_is_refused(tmp_path: Path, swap: str) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    write_family(root)
    registry = warmed(root)
    outside.mkdir()
    if swap in ("template", "partial"):
        victim = root / ("fam/t.py.j2" if swap == "template" else "shared/_part.py.j2")
        (outside / "secret.py.j2").write_text(victim.read_text())
        victim.unlink()
        victim.symlink_to(outside / "secret.py.j2")
    else:
        if swap == "folder":
            shutil.copytree(root / "fam", outside / "fam")
            shutil.rmtree(root / "fam")
        else:  # the very same files, inodes and stamps, reached through a symlink
            (root / "fam").rename(outside / "fam")
        (root / "fam").symlink_to(outside / "fam", target_is_directory=True)
    with pytest.raises(TemplateError, match="template not found"):
        registry.render(make_spec("fam/t"))


def test_a_new_partial_or_metadata_in_an_earlier_root_takes_effect_at_once(tmp_path: Path) -> None:
    early, base = tmp_path / "early", tmp_path / "base"
    write_family(base)
    (early / "fam").mkdir(parents=True)
    (early / "shared").mkdir()
    (early / "fam" / "t.py.j2").write_text(PARTIAL_USER)  # an override without metadata of its own
    registry = warmed(early, base)
    first = registry.render(make_spec("fam/t"))
    assert first.source.startswith("# base part") and registry.info("fam/t").description == "base"
    (early / "shared" / "_part.py.j2").write_text("# early part\n")
    second = registry.render(make_spec("fam/t"))
    assert second.source.startswith("# early part") and second.template_hash != first.template_hash
    (early / "fam" / "template.yaml").write_text(META.format("early"))
    assert registry.info("fam/t").description == "early"
    (early / "fam" / "template.yaml").unlink()
    assert registry.info("fam/t").description == "base"


def test_each_info_call_gets_its_own_parameters(registry: TemplateRegistry) -> None:
    registry.info("vision/cpu").parameters.clear()
    assert "num_classes" in registry.info("vision/cpu").parameters
