"""``dtf templates list|render``: inspect the test templates."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from . import common
from .common import TemplatesOpt, errors_to_exit

templates_app = typer.Typer(help="Inspect the test templates.", no_args_is_help=True)


@templates_app.command("list")
@errors_to_exit
def templates_list(templates: TemplatesOpt = None) -> None:
    """List templates with their families, hardware and parameters.

    Example: dtf templates list
    """
    registry = common.template_registry(common.settings(), templates)
    table = Table(title="templates")
    for col in ("name", "families", "hardware", "parameters", "description"):
        table.add_column(col, overflow="fold")
    for info in registry.list():
        table.add_row(info.name, ", ".join(info.families), ", ".join(info.hardware),
                      ", ".join(f"{k}={v.get('default') if isinstance(v, dict) else v}" for k, v in info.parameters.items()),
                      info.description)
    common.out.print(table)


@templates_app.command("render")
@errors_to_exit
def templates_render(
    name: Annotated[str, typer.Argument(help="Template name, e.g. text_embedding/cpu.")],
    model: Annotated[str, typer.Option("--model")] = "example-model",
    hardware: Annotated[str, typer.Option("--hardware")] = "cpu",
    batch_size: Annotated[int, typer.Option("--batch-size")] = 1,
    precision: Annotated[str, typer.Option("--precision")] = "fp32",
    templates: TemplatesOpt = None,
) -> None:
    """Render one template to stdout as the worker would run it.

    Example: dtf templates render text_embedding/cpu --model bert-base-uncased --batch-size 4
    """
    from ..errors import check_option, check_positive
    from ..model import HARDWARE_KINDS, PRECISIONS, TestSpec
    from ..suite import detect_family

    check_option("--hardware", hardware, HARDWARE_KINDS, "hardware")
    check_option("--precision", precision, PRECISIONS, "precision")
    check_positive("--batch-size", batch_size)
    registry = common.template_registry(common.settings(), templates)
    spec = TestSpec(test_id=f"{model}/{hardware}/bs{batch_size}/{precision}", model=model,
                    family=detect_family(model), hardware=hardware, batch_size=batch_size,
                    precision=precision, template=name)
    sys.stdout.write(registry.render(spec).source)
