"""Template rendering: renders per second of every built-in template that runs on cpu,
through ``TemplateRegistry.render`` (the sandbox, pyrepr checks, metadata and content
hash included), with compiled templates cached by the registry's Jinja environment.
The baseline is the same template source rendered by a plain, unsandboxed
``jinja2.Environment`` compiled once: what rendering costs without any of dtf's checks.

    python bench/render.py            # 500 renders per template, 3 repeats
    python bench/render.py --quick    # 20 renders per template, 1 repeat
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_common_args, emit, ratio, repeats_of, summary  # noqa: E402

import jinja2  # noqa: E402

from dtf.model import TestSpec  # noqa: E402
from dtf.templates import TemplateRegistry, builtin_root, pyrepr, render_context  # noqa: E402


def specs_for(name: str, family: str, k: int) -> list[TestSpec]:
    return [
        TestSpec(test_id=f"m{i}/cpu/bs{1 + i % 8}/fp32", model=f"org/model-{i}", family=family, hardware="cpu",
                 batch_size=1 + i % 8, precision=("fp32", "fp16", "bf16", "int8")[i % 4], template=name)
        for i in range(k)
    ]


def plain_environment() -> jinja2.Environment:
    class Loader(jinja2.BaseLoader):
        def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str, None]:
            family, variant = template.split("/")
            path = builtin_root() / family / f"{variant}.py.j2"
            return path.read_text(encoding="utf-8"), str(path), None

    env = jinja2.Environment(loader=Loader(), undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["pyrepr"] = pyrepr
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("-k", "--renders", type=int, default=None, help="renders per template (default 500; 20 with --quick)")
    args = parser.parse_args()
    k = args.renders or (20 if args.quick else 500)
    reps = repeats_of(args)
    registry = TemplateRegistry()
    plain = plain_environment()
    per_template: dict[str, object] = {}
    total_dtf, total_plain = [], []
    for info in registry.list():
        if "cpu" not in info.hardware or not info.families:
            continue
        specs = specs_for(info.name, info.families[0], k)
        t0 = time.perf_counter()
        registry.render(specs[0])  # cold: compile and cache
        cold = time.perf_counter() - t0
        dtf_runs, plain_runs = [], []
        template = plain.get_template(info.name)
        for _ in range(reps):
            t0 = time.perf_counter()
            for spec in specs:
                registry.render(spec)
            dtf_runs.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for spec in specs:
                template.render(render_context(spec, info))
            plain_runs.append(time.perf_counter() - t0)
        d, p = summary(dtf_runs), summary(plain_runs)
        total_dtf.append(d["median"])
        total_plain.append(p["median"])
        per_template[info.name] = {
            "cold_first_render_ms": round(cold * 1000, 2),
            "dtf_renders_per_s": round(k / d["median"]),
            "plain_jinja_renders_per_s": round(k / p["median"]),
            "dtf_wall_s": d,
            "source_bytes": len(registry.render(specs[0]).source.encode()),
        }
    dtf_rate = k * len(total_dtf) / sum(total_dtf)
    plain_rate = k * len(total_plain) / sum(total_plain)
    emit("render", args, {
        "renders_per_template": k,
        "templates": per_template,
        "overall": {"dtf_renders_per_s": round(dtf_rate), "plain_jinja_renders_per_s": round(plain_rate)},
        "ratios": {"dtf_vs_plain_jinja": ratio(dtf_rate, plain_rate)},
    }, notes=[
        "dtf = TemplateRegistry.render: sandboxed, pyrepr-checked, with metadata lookup and content hash",
        "plain = the same template compiled once by an unsandboxed jinja2.Environment, render only",
    ])


if __name__ == "__main__":
    main()
