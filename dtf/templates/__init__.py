"""Template registry and sandboxed rendering of test templates.

A template is the file ``<root>/<family>/<variant>.py.j2``, named ``family/variant``; the
metadata of a folder's variants (description, families, hardware, parameters) lives in
``<root>/<family>/template.yaml`` and is read without rendering. Roots are searched in
order, extra roots first, so a user template overrides a built-in one of the same name.
A file or folder whose name starts with ``_`` is a partial: templates may ``{% include %}``
it, but it is never listed, resolved or rendered on its own.

Rendering runs in Jinja's immutable sandbox with StrictUndefined and a loader that only
loads validated names from inside the roots. Every ``{{ }}`` must pass through the
``pyrepr`` filter, which writes a Python literal of plain data only, so no value (a model
name with quotes, say) can add code to a rendered test.

The package, by concept (each module imports only those above it):

- `sandbox`: the sandboxed Jinja environment, `pyrepr`, size and time caps, render errors
- `metadata`: template.yaml, `TemplateInfo`, parameter type checks, `render_context`
- `lookup`: names to files inside the roots, and the watched memo of those answers
- `registry`: `TemplateRegistry` (listing, info, `resolve`: the one template-selection
  policy, which dtf.suite's expansion calls, and `render`), `builtin_root`
"""

from __future__ import annotations

from .metadata import HASH_HEX_CHARS, TemplateInfo, TemplateParameter, render_context
from .registry import DEFAULT_TEMPLATE, TemplateRegistry, builtin_root
from .sandbox import MAX_OUTPUT_BYTES, RENDER_TIMEOUT_S, PySource, pyrepr

__all__ = [
    "DEFAULT_TEMPLATE",
    "HASH_HEX_CHARS",
    "MAX_OUTPUT_BYTES",
    "RENDER_TIMEOUT_S",
    "PySource",
    "TemplateInfo",
    "TemplateParameter",
    "TemplateRegistry",
    "builtin_root",
    "pyrepr",
    "render_context",
]
