"""Suite files: loading and validation, matrix expansion into `TestSpec`s, model family
detection, priority and memory estimates, and dependency chains between tests.

Pure core: it reads the one suite file it is given and imports neither Celery, Redis nor
DuckDB. Every problem with a suite is a `SuiteError(path, field, message)` whose field is a
path into the document (``models[2].batch_sizes[1]``).

    suite = load_suite("examples/smoke.yaml")
    specs = expand_suite(suite, resolve_template=registry.resolve)  # models x hardware x batch sizes x precisions

The package, by concept (each module imports only those above it):

- `families`: model families (detection from the name), priority, memory estimate, slug
- `data`: the frozen `Suite` and its parts, the keys a suite file may hold, value limits
- `check`: `_Checker`, the validators that raise SuiteErrors with field paths
- `graph`: depends_on selectors, the dependency map, dangling ids and cycles
- `parse`: reading the file (size cap, YAML) and validating the document into a `Suite`
- `expand`: the test matrix, test ids, templates through the resolver, `render_suite`

Which template a test uses is decided in one place, `TemplateRegistry.resolve`
(dtf.templates); expansion calls it through ``resolve_template``.
"""

from __future__ import annotations

from .data import (
    MAX_BATCH_SIZE,
    MODEL_KEYS,
    PYTEST_FAMILY,
    PYTEST_TEMPLATE,
    SUITE_KEYS,
    TEST_KEYS,
    TEST_SPLITS,
    DependencyEdge,
    ModelEntry,
    RunSettings,
    Suite,
    TestTaskEntry,
)
from .expand import DEFAULT_MAX_TESTS, TemplateResolver, expand_suite, format_test_id, render_suite
from .families import FAMILIES, KNOWN_MODELS, detect_family, estimate_memory_gb, model_slug, priority
from .graph import validate_dependencies
from .parse import DEFAULT_MAX_BYTES, load_suite, parse_suite

__all__ = [
    "FAMILIES",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_TESTS",
    "MAX_BATCH_SIZE",
    "SUITE_KEYS",
    "MODEL_KEYS",
    "KNOWN_MODELS",
    "RunSettings",
    "ModelEntry",
    "DependencyEdge",
    "TestTaskEntry",
    "TEST_KEYS",
    "TEST_SPLITS",
    "PYTEST_FAMILY",
    "PYTEST_TEMPLATE",
    "Suite",
    "TemplateResolver",
    "load_suite",
    "parse_suite",
    "expand_suite",
    "detect_family",
    "model_slug",
    "format_test_id",
    "priority",
    "estimate_memory_gb",
    "validate_dependencies",
    "render_suite",
]
