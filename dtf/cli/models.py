"""``dtf models list|fetch|inspect``: options here, logic and printing in dtf.models.commands."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from . import common
from .common import JsonOpt, errors_to_exit

models_app = typer.Typer(help="Real models: what this machine can run, fetch into the HF cache, inspect.", no_args_is_help=True)


@models_app.command("list")
@errors_to_exit
def models_list(as_json: JsonOpt = False) -> None:
    """What this machine can run: model sources and their packages, ONNX providers, the HF cache.

    Example: dtf models list
    """
    from ..models.commands import list_models

    raise typer.Exit(list_models(common.out, as_json=as_json))


@models_app.command("fetch")
@errors_to_exit
def models_fetch(
    name: Annotated[str, typer.Argument(help="Hub id, e.g. prajjwal1/bert-tiny.")],
    revision: Annotated[Optional[str], typer.Option("--revision", help="Branch, tag or commit.")] = None,
) -> None:
    """Download a model into the Hugging Face cache (needs the network; exit 2 offline).

    Example: dtf models fetch prajjwal1/bert-tiny
    """
    from ..models.commands import fetch_model

    raise typer.Exit(fetch_model(common.out, name, revision=revision))


@models_app.command("inspect")
@errors_to_exit
def models_inspect(
    name: Annotated[str, typer.Argument(help="Model name or hub id.")],
    source: Annotated[str, typer.Option("--source", help="hf or timm.")] = "hf",
    weights: Annotated[str, typer.Option("--weights", help="pretrained (config from path or cache) or random (else defaults).")] = "pretrained",
    path: Annotated[Optional[str], typer.Option("--path", help="A save_pretrained folder.")] = None,
    revision: Annotated[Optional[str], typer.Option("--revision")] = None,
    task: Annotated[str, typer.Option("--task")] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Batch for the scheduler's estimate.")] = 1,
    hardware: Annotated[str, typer.Option("--hardware", help="Hardware for the scheduler's estimate.")] = "cpu",
    as_json: JsonOpt = False,
) -> None:
    """Architecture, parameter count and memory per precision, on torch's meta device (no weights).

    Example: dtf models inspect bert-base-uncased --weights random
    """
    from ..models.commands import inspect_command

    raise typer.Exit(inspect_command(common.out, name, source=source, weights=weights, path=path, revision=revision, task=task,
                                     batch_size=batch_size, hardware=hardware, as_json=as_json))

