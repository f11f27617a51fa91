"""Model reuse (dtf.models.reuse): CPU tests that ask for ``reuse_model: true`` are forked
from a model server that loaded the model once. Real transformers models, saved into a temp
dir and loaded back with from_pretrained, through dtf.runner.execute as a worker calls it:
each test still a process of its own, the same fingerprint as a test that loads the model
itself, a model changed by one test unchanged for the next, and a fallback to loading in
the test when the server cannot start."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from dtf import forkserver
from dtf.model import TestSpec
from dtf.models.reuse import load_config
from dtf.runner import execute
from dtf.templates import TemplateRegistry

from .conftest import save_tiny

pytest.importorskip("torch")
pytest.importorskip("transformers")

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


@pytest.fixture(autouse=True)
def _fresh_servers() -> Any:
    forkserver.stop_default_server()
    yield
    forkserver.stop_default_server()


def model_test(folder: Path, *, precision: str = "fp32", reuse: bool = True, **params: Any) -> Any:
    source = {"source": "hf", "weights": "pretrained", "task": "auto", "parity": True, "path": str(folder)}
    spec = TestSpec(f"tiny-bert/cpu/bs2/{precision}", "tiny-bert", "text_embedding", "cpu", 2, precision, "models/torch",
                    params={"threads": 1, "model_source": source, **({"reuse_model": True} if reuse else {}), **params},
                    iterations=2, warmup=1, timeout_s=300)
    return TemplateRegistry([TEMPLATES]).render(spec)


def run(test: Any) -> Any:
    result = execute(test, run_id="reuse", attempt=1, worker_id="w@test", hostname="h", env=dict(os.environ))
    assert result.status == "passed", (result.error, result.stderr_tail)
    return result


def test_tests_of_one_model_are_forked_from_a_server_that_loaded_it_once(tmp_path: Path) -> None:
    folder = save_tiny("bert", tmp_path / "tiny-bert")
    loaded_itself = run(model_test(folder, reuse=False)).metrics
    first, second = (run(model_test(folder)).metrics for _ in range(2))
    bf16 = run(model_test(folder, precision="bf16")).metrics
    assert loaded_itself["model_reused"] is False and "model_load_s" not in loaded_itself
    for m in (first, second, bf16):
        assert m["model_reused"] is True and m["model_load_s"] > 0
        assert m["load_time_s"] < loaded_itself["load_time_s"]  # a dict lookup against from_pretrained
    assert first["fingerprint"] == second["fingerprint"] == loaded_itself["fingerprint"]
    assert bf16["parity"]["verdict"] == "pass"
    [server] = forkserver._model_servers.values()  # one server for the model, whatever the precision
    assert server.running()


def test_a_test_that_changes_the_weights_changes_its_own_copy_only(tmp_path: Path) -> None:
    folder = save_tiny("bert", tmp_path / "tiny-bert")
    before = run(model_test(folder)).metrics["fingerprint"]
    # int8 quantizes the module (a new one) and bf16 casts the parameters in place: in the
    # forked test's copy-on-write pages, never in the server's.
    run(model_test(folder, precision="int8"))
    run(model_test(folder, precision="bf16"))
    assert run(model_test(folder)).metrics["fingerprint"] == before


def test_only_what_builds_the_module_picks_the_server() -> None:
    # Inputs (seq_len, image_size...) and threads are each test's own: they share the server.
    base = {"model_source": {"source": "hf"}, "reuse_model": True, "threads": 1}
    one = load_config("m", "f", base)
    assert one == load_config("m", "f", dict(base, threads=4, seq_len=64))
    assert one != load_config("m", "f", dict(base, config={"num_hidden_layers": 1}))
    assert one != load_config("m", "f", dict(base, seed=1))
    assert load_config("m", "f", dict(base, reuse_model=False)) is None
    assert load_config("m", "f", dict(base, model_source={"source": "onnx"})) is None


def test_a_server_that_cannot_load_the_model_leaves_the_test_to_load_it(tmp_path: Path) -> None:
    folder = save_tiny("bert", tmp_path / "tiny-bert")
    test = model_test(folder)
    (folder / "config.json").rename(folder / "config.json.away")  # the server's load fails...
    server = forkserver.model_server_for(load_config(test.spec.model, test.spec.family, test.spec.params),
                                         dict(os.environ), forkserver.sys.executable)
    assert server is None
    (folder / "config.json.away").rename(folder / "config.json")  # ...the test, spawned, loads it
    metrics = run(test).metrics
    assert metrics["model_reused"] is False


def test_a_timm_model_is_reused_too() -> None:
    pytest.importorskip("timm")
    source = {"source": "timm", "weights": "random", "task": "auto", "parity": True}

    def timm_test(reuse: bool) -> Any:
        spec = TestSpec("test_resnet/cpu/bs1/fp32", "test_resnet", "vision", "cpu", 1, "fp32", "models/torch",
                        params={"threads": 1, "image_size": 32, "model_source": source,
                                **({"reuse_model": True} if reuse else {})}, iterations=2, warmup=1, timeout_s=300)
        return TemplateRegistry([TEMPLATES]).render(spec)

    own, reused = run(timm_test(False)).metrics, run(timm_test(True)).metrics
    assert (own["model_reused"], reused["model_reused"]) == (False, True)
    assert own["fingerprint"] == reused["fingerprint"] and own["revision"] == reused["revision"]
