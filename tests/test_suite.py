"""Suite files: validation messages, matrix expansion, ids, families, priority, memory and
dependency chains."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dtf.errors import SuiteError, TemplateNotFound
from dtf.model import HARDWARE_KINDS, PRECISIONS, TestSpec
from dtf.suite import (
    FAMILIES,
    MODEL_KEYS,
    SUITE_KEYS,
    Suite,
    detect_family,
    estimate_memory_gb,
    expand_suite,
    load_suite,
    model_slug,
    parse_suite,
    priority,
    validate_dependencies,
)
from dtf.templates import TemplateRegistry

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "suites"
EXAMPLES = ROOT / "examples"
ID_PATTERN = re.compile(r"[a-z0-9._-]+/(cpu|cuda|rocm|mps|webgpu)/bs[1-9][0-9]*/(fp32|fp16|bf16|int8)")


def doc(**overrides: Any) -> dict[str, Any]:
    """A valid suite document; keyword arguments replace or (with None) remove keys."""
    base: dict[str, Any] = {
        "name": "t",
        "models": ["bert-base-uncased", "gpt2"],
        "hardware": ["cpu"],
        "batch_sizes": [1, 2, 4],
        "source": "synthetic",  # these tests are about the built-in templates; real models: tests/models/
    }
    for key, value in overrides.items():
        if value is None:
            base.pop(key, None)
        else:
            base[key] = value
    return base


def parse(data: object) -> Suite:
    return parse_suite(data, "suite.yaml")


def error_of(data: object) -> SuiteError:
    with pytest.raises(SuiteError) as info:
        parse(data)
    return info.value


def write(tmp_path: Path, text: str | bytes, name: str = "suite.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def ids(specs: list[TestSpec]) -> list[str]:
    return [s.test_id for s in specs]


# -- validation errors ------------------------------------------------------------------


def test_missing_models_is_a_required_field_error() -> None:
    err = error_of(doc(models=None))
    assert (err.field, err.message) == ("models", "required field missing")
    assert str(err) == "suite.yaml: models: required field missing"


def test_missing_name_and_hardware_and_batch_sizes_are_required() -> None:
    for key in ("name", "hardware", "batch_sizes"):
        err = error_of(doc(**{key: None}))
        assert (err.field, err.message) == (key, "required field missing")


def test_empty_model_list_is_rejected() -> None:
    assert error_of(doc(models=[])).message == "expected a non-empty list of models, got a list"


def test_batch_size_zero_is_not_a_positive_integer() -> None:
    assert str(error_of(doc(batch_sizes=[0]))) == "suite.yaml: batch_sizes[0]: expected a positive integer, got 0"


def test_batch_size_written_as_a_word_is_rejected() -> None:
    err = error_of(doc(batch_sizes=[1, "four"]))
    assert str(err) == "suite.yaml: batch_sizes[1]: expected a positive integer, got 'four'"


def test_a_boolean_is_not_a_batch_size() -> None:
    assert error_of(doc(batch_sizes=[True])).message == "expected a positive integer, got true"


def test_batch_sizes_above_the_cap_and_fractions_and_duplicates_are_rejected() -> None:
    assert error_of(doc(batch_sizes=[5000])).message == "expected a positive integer of at most 4096, got 5000"
    assert error_of(doc(batch_sizes=[2.0])).message == "expected a positive integer, got 2.0"
    assert error_of(doc(batch_sizes=[1, 2, 1])).field == "batch_sizes[2]"
    assert error_of(doc(batch_sizes=4)).message == "expected a non-empty list of batch sizes, got 4"


def test_unknown_hardware_names_the_kinds_it_expected() -> None:
    err = error_of(doc(hardware=["cpu", "tpu"]))
    assert str(err) == "suite.yaml: hardware[1]: unknown hardware 'tpu' (expected one of cpu, cuda, rocm, mps, webgpu)"


def test_unknown_precision_is_rejected_and_precisions_default_to_fp32() -> None:
    err = error_of(doc(precisions=["fp64"]))
    assert err.message == "unknown precision 'fp64' (expected one of fp32, fp16, bf16, int8)"
    assert parse(doc()).precisions == ("fp32",)


def test_model_level_errors_name_the_model_entry_field() -> None:
    err = error_of(doc(models=["gpt2", {"name": "bert", "batch_sizes": [1, 0]}]))
    assert err.field == "models[1].batch_sizes[1]"
    assert error_of(doc(models=[{"name": "gpt2", "hardware": ["tpu"]}])).field == "models[0].hardware[0]"
    assert error_of(doc(models=[{"family": "vision"}])).field == "models[0].name"
    assert error_of(doc(models=[42])).message == "expected a model name or a mapping with a name, got 42"
    assert error_of(doc(models=[" gpt2"])).field == "models[0]"


def test_duplicate_model_names_are_an_error() -> None:
    with pytest.raises(SuiteError) as info:
        load_suite(FIXTURES / "duplicate_models.yaml")
    assert info.value.field == "models[2].name"
    assert info.value.message == "duplicate model 'gpt2' (also models[0])"


def test_unknown_top_level_key_suggests_the_closest_key() -> None:
    with pytest.raises(SuiteError) as info:
        load_suite(FIXTURES / "typo_key.yaml")
    assert info.value.message == "unknown key 'modles' (did you mean 'models'?)"


def test_unknown_model_key_suggests_the_closest_key() -> None:
    err = error_of(doc(models=[{"name": "gpt2", "batch_size": [1]}]))
    assert str(err) == "suite.yaml: models[0]: unknown key 'batch_size' (did you mean 'batch_sizes'?)"


def test_unknown_key_without_a_close_match_lists_the_known_keys() -> None:
    err = error_of(doc(colour="blue"))
    assert err.message.startswith("unknown key 'colour' (expected one of name, description,")


def test_a_non_mapping_top_level_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(SuiteError) as info:
        load_suite(write(tmp_path, "- gpt2\n- bert\n"))
    assert info.value.message == "expected a mapping at the top level, got a list"


def test_yaml_syntax_errors_give_line_and_column() -> None:
    with pytest.raises(SuiteError) as info:
        load_suite(FIXTURES / "bad_syntax.yaml")
    assert info.value.message.startswith("invalid YAML at line 5, column 12:")


def test_an_empty_file_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="file is empty"):
        load_suite(write(tmp_path, ""))
    with pytest.raises(SuiteError, match="no YAML document"):
        load_suite(write(tmp_path, "# only a comment\n"))


def test_a_ten_megabyte_file_is_over_the_cap(tmp_path: Path) -> None:
    path = write(tmp_path, b"#" * (10 << 20))
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    assert str(info.value) == f"{path}: file is 10.0 MiB, over the 1.0 MiB cap"


def test_missing_files_directories_and_non_utf8_bytes_are_suite_errors(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="no such file"):
        load_suite(tmp_path / "nope.yaml")
    with pytest.raises(SuiteError, match="is a directory"):
        load_suite(tmp_path)
    with pytest.raises(SuiteError, match="not UTF-8"):
        load_suite(write(tmp_path, b"name: \xff\xfe\n"))


def test_yaml_tags_beyond_plain_data_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="invalid YAML"):
        load_suite(write(tmp_path, "name: !!python/object/apply:os.system ['true']\n"))


@pytest.mark.parametrize("value", ["!!timestamp cuda", "!!float abc", "!!int abc", "9" * 5000])
def test_malformed_tagged_scalars_and_huge_numbers_are_invalid_yaml(tmp_path: Path, value: str) -> None:
    with pytest.raises(SuiteError, match="invalid YAML"):
        load_suite(write(tmp_path, f"name: {value}\n"))


def test_deeply_nested_yaml_is_a_suite_error(tmp_path: Path) -> None:
    with pytest.raises(SuiteError):
        load_suite(write(tmp_path, "name: t\nmodels: " + "[" * 50_000 + "]" * 50_000 + "\n"))


def test_run_settings_must_be_in_range() -> None:
    assert error_of(doc(timeout_s=0)).message == "expected a positive number of seconds, got 0"
    assert error_of(doc(timeout_s=float("nan"))).field == "timeout_s"
    assert error_of(doc(retries=-1)).message == "expected an integer from 0 to 10, got -1"
    assert error_of(doc(retries=11)).message == "expected an integer from 0 to 10, got 11"
    assert error_of(doc(warmup=-1)).message == "expected a non-negative integer, got -1"
    too_long = error_of(doc(timeout_s=10**6)).message
    assert too_long == "expected a positive number of seconds of at most 86400, got 1000000"
    assert error_of(doc(defaults={"iterations": 0})).field == "defaults.iterations"
    assert error_of(doc(defaults={"timeout": 5})).message == "unknown key 'timeout' (did you mean 'timeout_s'?)"
    assert error_of(doc(models=[{"name": "gpt2", "retries": False}])).field == "models[0].retries"


def test_huge_integers_are_rejected_without_crashing() -> None:
    huge = 10**400
    assert error_of(doc(timeout_s=huge)).message == "expected a positive number of seconds, got a very large integer"
    assert error_of(doc(batch_sizes=[huge])).field == "batch_sizes[0]"
    assert error_of(doc(models=[{"name": "gpt2", "params": {"memory_gb": huge}}])).field == "models[0].params.memory_gb"


def test_a_setting_given_twice_with_different_values_is_an_error() -> None:
    assert error_of(doc(timeout_s=10, defaults={"timeout_s": 20})).field == "timeout_s"
    assert parse(doc(timeout_s=10, defaults={"timeout_s": 10, "retries": 2})).defaults.retries == 2


def test_params_must_be_json_values_with_text_keys() -> None:
    import datetime

    assert error_of(doc(models=[{"name": "gpt2", "params": [1]}])).field == "models[0].params"
    err = error_of(doc(models=[{"name": "gpt2", "params": {"when": datetime.date(2024, 1, 1)}}]))
    assert err.field == "models[0].params.when"
    assert error_of(doc(models=[{"name": "gpt2", "params": {1: "x"}}])).field == "models[0].params"
    assert error_of(doc(models=[{"name": "gpt2", "params": {"memory_gb": -1}}])).field == "models[0].params.memory_gb"


def test_params_with_exponentially_many_aliases_are_refused(tmp_path: Path) -> None:
    # 10**8 leaves in a few hundred bytes: walking them naively would never finish
    text = "name: bomb\nhardware: [cpu]\nbatch_sizes: [1]\nmodels:\n  - name: gpt2\n    params:\n"
    text += "      a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, 8):
        text += f"      a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n"
    with pytest.raises(SuiteError, match="more than 10000 values in params"):
        load_suite(write(tmp_path, text))


def test_params_repeating_a_long_text_through_aliases_are_refused(tmp_path: Path) -> None:
    text = "name: bomb\nhardware: [cpu]\nbatch_sizes: [1]\nmodels:\n  - name: gpt2\n    params:\n"
    text += f"      long: &long {'x' * 100_000}\n      copies: [{', '.join(['*long'] * 5)}]\n"
    with pytest.raises(SuiteError, match="characters of text"):
        load_suite(write(tmp_path, text))


def test_family_and_template_names_are_checked() -> None:
    assert error_of(doc(models=[{"name": "gpt2", "family": "Text Gen"}])).field == "models[0].family"
    assert error_of(doc(models=[{"name": "gpt2", "template": "../../etc/passwd"}])).field == "models[0].template"
    assert error_of(doc(name="has space")).field == "name"


def test_dangling_dependency_names_the_selector() -> None:
    suite = load_suite(FIXTURES / "dangling.yaml")
    with pytest.raises(SuiteError) as info:
        expand_suite(suite)
    assert info.value.field == "depends_on[0].after"
    assert "'bert-base-uncased/cpu/bs16/fp32' matches no test" in info.value.message
    assert "dangling dependency" in info.value.message


def test_a_dependency_cycle_lists_its_test_ids() -> None:
    suite = load_suite(FIXTURES / "cycle.yaml")
    with pytest.raises(SuiteError) as info:
        expand_suite(suite)
    assert info.value.message.startswith(
        "dependency cycle: gpt2/cpu/bs1/fp32 -> gpt2/cpu/bs2/fp32 -> gpt2/cpu/bs1/fp32"
    )


def test_malformed_selectors_are_rejected_when_parsing() -> None:
    def edge(test: str, after: str) -> dict[str, Any]:
        return doc(depends_on=[{"test": test, "after": after}])

    assert error_of(edge("gpt2/cpu", "gpt2/cpu/bs1/fp32")).field == "depends_on[0].test"
    assert "unknown hardware 'tpu'" in error_of(edge("gpt2/tpu/bs1/fp32", "gpt2/cpu/bs1/fp32")).message
    assert "batch part like bs4" in error_of(edge("gpt2/cpu/b1/fp32", "gpt2/cpu/bs1/fp32")).message
    assert error_of(doc(depends_on=[{"test": "gpt2/cpu/bs1/fp32"}])).field == "depends_on[0].after"


# -- loading and expansion ---------------------------------------------------------------


def test_a_loaded_suite_records_the_sha256_of_its_file_bytes() -> None:
    path = FIXTURES / "minimal.yaml"
    suite = load_suite(path)
    assert suite.source_hash == hashlib.sha256(path.read_bytes()).hexdigest()
    assert suite.path == str(path)


def test_a_parsed_document_round_trips_through_to_dict() -> None:
    models = ["gpt2", {"name": "bert", "params": {"hidden": 64}, "retries": 2}]
    suite = parse(doc(models=models, defaults={"warmup": 0}, depends_on=[{"test": "*/*/*/*", "after": "gpt2/*/bs1/*"}]))
    again = parse(suite.to_dict())
    assert again == suite


def test_bare_string_models_are_short_for_a_name_mapping() -> None:
    assert parse(doc(models=["gpt2"])).models == parse(doc(models=[{"name": "gpt2"}])).models


def test_expansion_is_models_times_hardware_times_batches_times_precisions() -> None:
    suite = parse(doc(hardware=["cpu", "cuda"], batch_sizes=[4, 1, 2], precisions=["fp32", "fp16"]))
    specs = expand_suite(suite)
    assert len(specs) == 2 * 2 * 3 * 2
    assert ids(specs)[:7] == [
        "bert-base-uncased/cpu/bs1/fp32",
        "bert-base-uncased/cpu/bs1/fp16",
        "bert-base-uncased/cpu/bs2/fp32",
        "bert-base-uncased/cpu/bs2/fp16",
        "bert-base-uncased/cpu/bs4/fp32",
        "bert-base-uncased/cpu/bs4/fp16",
        "bert-base-uncased/cuda/bs1/fp32",
    ]
    assert ids(specs)[-1] == "gpt2/cuda/bs4/fp16"


def test_model_overrides_replace_the_suite_values() -> None:
    suite = parse(doc(
        models=["gpt2", {"name": "bert-base-uncased", "hardware": ["cuda"], "batch_sizes": [8], "precisions": ["bf16"],
                         "timeout_s": 30, "family": "vision", "template": "custom/x", "params": {"hidden": 64}}],
        defaults={"timeout_s": 100, "retries": 1},
    ))
    gpt2, *rest = expand_suite(suite)
    bert = rest[-1]
    assert (gpt2.timeout_s, gpt2.retries, gpt2.template) == (100.0, 1, "")  # the registry picks it
    assert bert.test_id == "bert-base-uncased/cuda/bs8/bf16"
    assert (bert.timeout_s, bert.retries, bert.family, bert.template) == (30.0, 1, "vision", "custom/x")
    assert dict(bert.params) == {"hidden": 64}


def test_without_a_resolver_the_registry_picks_the_template_when_it_renders() -> None:
    registry = TemplateRegistry()
    data = doc(models=["bert-base-uncased", "x-model", {"name": "y", "template": "generic/default"}],
               hardware=["cpu", "cuda", "webgpu"], batch_sizes=[1])
    bare, resolved = expand_suite(parse(data)), expand_suite(parse(data), resolve_template=registry.resolve)
    assert [s.template for s in bare] == [""] * 6 + ["generic/default"] * 3
    assert [registry.render(s).spec.template for s in bare] == [s.template for s in resolved]
    assert [s.template for s in resolved[:3]] == ["text_embedding/cpu", "text_embedding/torch", "generic/webgpu"]


def test_the_template_resolver_gets_family_hardware_and_explicit_template() -> None:
    calls: list[tuple[str, str, str | None]] = []

    def resolve(family: str, hardware: str, explicit: str | None) -> str:
        calls.append((family, hardware, explicit))
        return f"{family}@{hardware}"

    suite = parse(doc(models=["gpt2", {"name": "x-model", "template": "a/b"}], batch_sizes=[1, 2]))
    specs = expand_suite(suite, resolve_template=resolve)
    assert calls == [("text_generation", "cpu", None), ("unknown", "cpu", "a/b")]
    assert [s.template for s in specs] == ["text_generation@cpu"] * 2 + ["unknown@cpu"] * 2


def test_a_missing_template_becomes_a_suite_error_naming_the_model() -> None:
    def resolve(family: str, hardware: str, explicit: str | None) -> str:
        raise TemplateNotFound(f"no template {family}/{hardware}")

    with pytest.raises(SuiteError) as info:
        expand_suite(parse(doc(models=["gpt2"])), resolve_template=resolve)
    assert info.value.field == "models[0].template"
    assert "'gpt2' on cpu" in info.value.message


def test_expansion_over_max_tests_names_the_count_and_the_cap() -> None:
    suite = parse(doc(hardware=["cpu", "cuda"], precisions=["fp32", "fp16"]))
    with pytest.raises(SuiteError) as info:
        expand_suite(suite, max_tests=20)
    assert info.value.message == "expands to 24 tests, over the cap of 20"
    assert len(expand_suite(suite, max_tests=24)) == 24


def test_specs_carry_run_settings_priority_and_memory() -> None:
    spec = expand_suite(parse(doc(models=["gpt2"], batch_sizes=[4], iterations=7, warmup=0)))[0]
    assert (spec.iterations, spec.warmup) == (7, 0)
    assert spec.priority == priority("text_generation", 4, "fp32", "cpu")
    assert spec.memory_gb == estimate_memory_gb("text_generation", 4, "fp32", "cpu", {})


def test_specs_do_not_share_mutable_params() -> None:
    specs = expand_suite(parse(doc(models=[{"name": "gpt2", "params": {"shape": [1, 2]}}])))
    specs[0].params["shape"].append(3)
    assert specs[1].params["shape"] == [1, 2]


# -- test ids ------------------------------------------------------------------------------


def test_ids_use_a_lowercase_slug_of_the_model_name() -> None:
    assert model_slug("openai/CLIP-vit-base-patch32") == "openai-clip-vit-base-patch32"
    specs = expand_suite(parse(doc(models=["openai/CLIP-vit-base-patch32"], batch_sizes=[1])))
    assert ids(specs) == ["openai-clip-vit-base-patch32/cpu/bs1/fp32"]


def test_colliding_slugs_get_a_hash_suffix_and_the_plain_name_keeps_its_slug() -> None:
    specs = expand_suite(parse(doc(models=["gpt2", "GPT2", "Gpt2"], batch_sizes=[1])))
    suffix = {name: hashlib.sha256(name.encode()).hexdigest()[:8] for name in ("GPT2", "Gpt2")}
    assert ids(specs) == [
        "gpt2/cpu/bs1/fp32",
        f"gpt2-{suffix['GPT2']}/cpu/bs1/fp32",
        f"gpt2-{suffix['Gpt2']}/cpu/bs1/fp32",
    ]


model_names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._/+@ -]{0,16}[A-Za-z0-9]", fullmatch=True)
valid_documents = st.fixed_dictionaries(
    {
        "name": st.from_regex(r"[A-Za-z0-9_.-]{1,12}", fullmatch=True),
        "models": st.lists(model_names, min_size=1, max_size=6, unique=True),
        "hardware": st.lists(st.sampled_from(HARDWARE_KINDS), min_size=1, unique=True),
        "batch_sizes": st.lists(st.integers(1, 4096), min_size=1, max_size=5, unique=True),
        "precisions": st.lists(st.sampled_from(PRECISIONS), min_size=1, unique=True),
        "chain_batch_sizes": st.booleans(),
    }
)


@given(valid_documents)
@settings(max_examples=150, deadline=None)
def test_the_same_suite_always_expands_to_the_same_unique_ids(data: dict[str, Any]) -> None:
    first = expand_suite(parse(copy.deepcopy(data)))
    second = expand_suite(parse(copy.deepcopy(data)))
    assert first == second
    assert len(set(ids(first))) == len(first)
    assert all(ID_PATTERN.fullmatch(tid) for tid in ids(first))
    expected = len(data["models"]) * len(data["hardware"]) * len(data["batch_sizes"]) * len(data["precisions"])
    assert len(first) == expected
    position = {s.test_id: i for i, s in enumerate(first)}  # chains only point backwards in suite order
    assert all(position[parent] < position[s.test_id] for s in first for parent in s.depends_on)


@given(valid_documents)
@settings(max_examples=75, deadline=None)
def test_a_models_ids_do_not_depend_on_the_order_of_the_models(data: dict[str, Any]) -> None:
    reordered = dict(data, models=list(reversed(data["models"])))
    assert sorted(ids(expand_suite(parse(data)))) == sorted(ids(expand_suite(parse(reordered))))


# -- family detection --------------------------------------------------------------------

FAMILY_CASES = [
    ("bert-base-uncased", "text_embedding"),
    ("distilbert-base-uncased-finetuned-sst-2-english", "text_embedding"),
    ("FacebookAI/roberta-large", "text_embedding"),
    ("sentence-transformers/all-MiniLM-L6-v2", "text_embedding"),
    ("sentence-transformers/all-mpnet-base-v2", "text_embedding"),
    ("sentence-transformers/gtr-t5-base", "text_embedding"),
    ("BAAI/bge-small-en-v1.5", "text_embedding"),
    ("intfloat/e5-mistral-7b-instruct", "text_embedding"),
    ("intfloat/multilingual-e5-large", "text_embedding"),
    ("Alibaba-NLP/gte-Qwen2-1.5B-instruct", "text_embedding"),
    ("microsoft/deberta-v3-base", "text_embedding"),
    ("nomic-ai/nomic-embed-text-v1.5", "text_embedding"),
    ("gpt2", "text_generation"),
    ("distilgpt2", "text_generation"),
    ("EleutherAI/gpt-neo-125m", "text_generation"),
    ("meta-llama/Llama-2-7b-hf", "text_generation"),
    ("TinyLlama/TinyLlama-1.1B-Chat-v1.0", "text_generation"),
    ("mistralai/Mistral-7B-v0.1", "text_generation"),
    ("mistralai/Mixtral-8x7B-v0.1", "text_generation"),
    ("t5-small", "text_generation"),
    ("google/flan-t5-base", "text_generation"),
    ("google/mt5-small", "text_generation"),
    ("facebook/opt-125m", "text_generation"),
    ("Qwen/Qwen2-0.5B", "text_generation"),
    ("microsoft/phi-2", "text_generation"),
    ("google/gemma-2b", "text_generation"),
    ("tiiuae/falcon-7b", "text_generation"),
    ("bigscience/bloom-560m", "text_generation"),
    ("facebook/bart-large-cnn", "text_generation"),
    ("Helsinki-NLP/opus-mt-en-de", "text_generation"),
    ("google/vit-base-patch16-224", "vision"),
    ("microsoft/resnet-50", "vision"),
    ("facebook/convnext-tiny-224", "vision"),
    ("google/efficientnet-b0", "vision"),
    ("hustvl/yolos-tiny", "vision"),
    ("facebook/deit-base-distilled-patch16-224", "vision"),
    ("microsoft/swin-tiny-patch4-window7-224", "vision"),
    ("google/mobilenet_v2_1.0_224", "vision"),
    ("apple/mobilevit-small", "vision"),
    ("facebook/detr-resnet-50", "vision"),
    ("facebook/dinov2-small", "vision"),
    ("timm/eva02_base_patch14_224.mim_in22k", "vision"),
    ("openai/whisper-tiny", "audio"),
    ("distil-whisper/distil-large-v3", "audio"),
    ("facebook/wav2vec2-base-960h", "audio"),
    ("facebook/hubert-large-ls960-ft", "audio"),
    ("microsoft/wavlm-base-plus", "audio"),
    ("facebook/encodec_24khz", "audio"),
    ("laion/clap-htsat-unfused", "audio"),
    ("microsoft/speecht5_tts", "audio"),
    ("MIT/ast-finetuned-audioset-10-10-0.4593", "audio"),
    ("openai/clip-vit-base-patch32", "multimodal"),
    ("laion/CLIP-ViT-H-14-laion2B-s32B-b79K", "multimodal"),
    ("llava-hf/llava-1.5-7b-hf", "multimodal"),
    ("Salesforce/blip-image-captioning-base", "multimodal"),
    ("Salesforce/blip2-opt-2.7b", "multimodal"),
    ("facebook/flava-full", "multimodal"),
    ("google/siglip-base-patch16-224", "multimodal"),
    ("HuggingFaceM4/idefics-9b", "multimodal"),
    ("nlpconnect/vit-gpt2-image-captioning", "multimodal"),
    ("google/paligemma-3b-pt-224", "multimodal"),
    ("Qwen/Qwen2-VL-2B-Instruct", "multimodal"),
    ("meta-llama/Llama-3.2-11B-Vision-Instruct", "multimodal"),
    ("microsoft/trocr-base-handwritten", "multimodal"),
    ("my-org/my-custom-model", "unknown"),
    ("stabilityai/stable-diffusion-2-1", "unknown"),
]


@pytest.mark.parametrize(("name", "family"), FAMILY_CASES)
def test_family_detection_knows_real_model_names(name: str, family: str) -> None:
    assert detect_family(name) == family


def test_detected_families_are_known_families() -> None:
    assert {family for _, family in FAMILY_CASES} == set(FAMILIES)


def test_the_suite_family_overrides_detection() -> None:
    suite = parse(doc(models=[{"name": "gpt2", "family": "audio"}], batch_sizes=[1]))
    spec = expand_suite(suite, resolve_template=TemplateRegistry().resolve)[0]
    assert (spec.family, spec.template) == ("audio", "audio/cpu")


# -- priority and memory -----------------------------------------------------------------

families = st.sampled_from(FAMILIES)
batch_sizes = st.integers(1, 4096)
hardware_kinds = st.sampled_from(HARDWARE_KINDS)
precisions = st.sampled_from(PRECISIONS)


@given(families, batch_sizes, batch_sizes, precisions, hardware_kinds)
def test_priority_is_between_1_and_10_and_never_rises_with_batch_size(
    family: str, a: int, b: int, precision: str, hardware: str
) -> None:
    small, large = sorted((a, b))
    p_small, p_large = priority(family, small, precision, hardware), priority(family, large, precision, hardware)
    assert 1 <= p_large <= p_small <= 10


def test_the_smallest_fp32_embedding_test_runs_first() -> None:
    assert priority("text_embedding", 1, "fp32", "cpu") == 10
    assert priority("text_generation", 4096, "int8", "cpu") >= 1


@given(families, batch_sizes, precisions, hardware_kinds)
def test_memory_grows_with_batch_size(family: str, batch: int, precision: str, hardware: str) -> None:
    smaller = estimate_memory_gb(family, batch, precision, hardware, {})
    larger = estimate_memory_gb(family, batch * 2, precision, hardware, {})
    assert 0 < smaller < larger


@given(families, batch_sizes, hardware_kinds)
def test_fp16_needs_no_more_memory_than_fp32_and_int8_no_more_than_fp16(family: str, batch: int, hardware: str) -> None:
    fp32, fp16, bf16, int8 = (
        estimate_memory_gb(family, batch, precision, hardware, {}) for precision in ("fp32", "fp16", "bf16", "int8")
    )
    assert int8 <= fp16 == bf16 <= fp32


def test_memory_params_override_the_family_estimate() -> None:
    assert estimate_memory_gb("vision", 4, "fp32", "cuda", {"memory_gb": 12}) == 12.0
    small = estimate_memory_gb("vision", 1, "fp32", "cpu", {"param_count_m": 1})
    assert small < estimate_memory_gb("vision", 1, "fp32", "cpu", {})


# -- dependencies ------------------------------------------------------------------------


def test_batch_sizes_chain_from_smallest_to_largest_by_default() -> None:
    specs = expand_suite(parse(doc(models=["gpt2"], batch_sizes=[4, 1, 2], precisions=["fp32", "fp16"])))
    deps = {s.test_id: s.depends_on for s in specs}
    assert deps["gpt2/cpu/bs1/fp32"] == ()
    assert deps["gpt2/cpu/bs2/fp32"] == ("gpt2/cpu/bs1/fp32",)
    assert deps["gpt2/cpu/bs4/fp32"] == ("gpt2/cpu/bs2/fp32",)
    assert deps["gpt2/cpu/bs4/fp16"] == ("gpt2/cpu/bs2/fp16",)


def test_chains_can_be_turned_off() -> None:
    specs = expand_suite(parse(doc(chain_batch_sizes=False)))
    assert all(s.depends_on == () for s in specs)


def test_explicit_edges_add_to_the_chains() -> None:
    suite = parse(doc(depends_on=[{"test": "bert-base-uncased/cpu/bs4/fp32", "after": "gpt2/cpu/bs1/fp32"}]))
    deps = {s.test_id: s.depends_on for s in expand_suite(suite)}
    assert deps["bert-base-uncased/cpu/bs4/fp32"] == ("bert-base-uncased/cpu/bs2/fp32", "gpt2/cpu/bs1/fp32")


def test_selectors_accept_globs_and_model_names_with_slashes() -> None:
    suite = parse(doc(
        models=["openai/clip-vit-base-patch32", "google/vit-base-patch16-224"],
        depends_on=[{"test": "openai/clip-vit-base-patch32/cpu/*/fp32", "after": "google-vit-*/cpu/bs1/*"}],
        chain_batch_sizes=False,
    ))
    deps = {s.test_id: s.depends_on for s in expand_suite(suite)}
    vit = "google-vit-base-patch16-224/cpu/bs1/fp32"
    assert [d for tid, d in deps.items() if tid.startswith("openai")] == [(vit,)] * 3
    assert deps[vit] == ()


def test_a_selector_matching_the_test_itself_adds_no_self_edge() -> None:
    suite = parse(doc(depends_on=[{"test": "*/cpu/*/fp32", "after": "gpt2/cpu/bs1/fp32"}], chain_batch_sizes=False))
    deps = {s.test_id: s.depends_on for s in expand_suite(suite)}
    assert deps["gpt2/cpu/bs1/fp32"] == ()
    assert deps["bert-base-uncased/cpu/bs1/fp32"] == ("gpt2/cpu/bs1/fp32",)


def spec(test_id: str, *deps: str) -> TestSpec:
    return TestSpec(test_id, "m", "vision", "cpu", 1, "fp32", "vision/cpu", depends_on=deps)


def test_validate_dependencies_rejects_dangling_duplicate_and_cyclic_graphs() -> None:
    with pytest.raises(SuiteError, match="dangling dependency"):
        validate_dependencies([spec("a", "ghost")])
    with pytest.raises(SuiteError, match="duplicate test id 'a'"):
        validate_dependencies([spec("a"), spec("a")])
    with pytest.raises(SuiteError, match=r"dependency cycle: a -> c -> b -> a"):
        validate_dependencies([spec("a", "c"), spec("b", "a"), spec("c", "b")])


def test_a_chain_of_thousands_of_tests_does_not_hit_the_recursion_limit() -> None:
    specs = [spec("t0")] + [spec(f"t{i}", f"t{i - 1}") for i in range(1, 5000)]
    validate_dependencies(list(reversed(specs)))
    with pytest.raises(SuiteError, match=r"dependency cycle: t0 -> t4999 -> t4998 -> "):
        validate_dependencies([spec("t0", "t4999"), *specs[1:]])


# -- examples ------------------------------------------------------------------------------


def test_the_smoke_example_has_five_families_on_cpu_and_cuda() -> None:
    suite = load_suite(EXAMPLES / "smoke.yaml")
    specs = expand_suite(suite)
    assert len(specs) == 20
    assert Counter(s.hardware for s in specs) == {"cpu": 10, "cuda": 10}
    assert {s.family for s in specs} == set(FAMILIES) - {"unknown"}


def test_the_matrix_example_has_more_than_thirty_cpu_tests() -> None:
    specs = expand_suite(load_suite(EXAMPLES / "matrix.yaml"))
    assert sum(s.hardware == "cpu" for s in specs) >= 30


def test_the_cuda_example_is_a_small_fp32_and_fp16_gpu_suite() -> None:
    specs = expand_suite(load_suite(EXAMPLES / "cuda.yaml"))
    assert len(specs) == 8
    assert {s.hardware for s in specs} == {"cuda"}
    assert {s.precision for s in specs} == {"fp32", "fp16"}


def test_the_requirements_example_routes_three_sets() -> None:
    from dtf.requirements import queue_of

    specs = expand_suite(load_suite(EXAMPLES / "requirements.yaml"))
    assert len(specs) == 6 and len({queue_of(s) for s in specs}) == 3
    assert all(s.requires.get("ram_gb") == 2.0 for s in specs)


# -- robustness ----------------------------------------------------------------------------

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 5000), st.integers(), st.floats(allow_nan=True), st.text(max_size=12),
    st.sampled_from([*HARDWARE_KINDS, *PRECISIONS, "gpt2", "tpu", "*/cpu/*/*", "gpt2/cpu/bs1/fp32", "bs1"]),
)
keys = st.one_of(
    st.sampled_from([*SUITE_KEYS, *MODEL_KEYS, "test", "after", "params"]), st.text(max_size=6), st.integers(0, 3)
)
yamlish = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5), max_leaves=25
)


def check_only_suite_errors(data: object) -> None:
    try:
        suite = parse(data)
    except SuiteError:
        return
    with contextlib.suppress(SuiteError):
        expand_suite(suite, max_tests=2_000)


@given(st.one_of(yamlish, st.dictionaries(st.sampled_from(SUITE_KEYS), yamlish)))
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_arbitrary_documents_raise_only_suite_errors(data: object) -> None:
    check_only_suite_errors(data)


@given(st.sampled_from([*SUITE_KEYS, "models.0", "models.1", "depends_on.0"]), yamlish)
@settings(max_examples=300, deadline=None)
def test_a_valid_document_with_one_field_replaced_raises_only_suite_errors(field: str, value: object) -> None:
    data = doc(
        models=["gpt2", {"name": "bert-base-uncased", "batch_sizes": [2]}],
        depends_on=[{"test": "gpt2/cpu/bs2/fp32", "after": "bert-base-uncased/cpu/bs2/fp32"}],
    )
    key, _, index = field.partition(".")
    if index:
        data[key][int(index)] = value
    else:
        data[key] = value
    check_only_suite_errors(data)


@given(st.text(max_size=200))
@settings(max_examples=200, deadline=None)
def test_arbitrary_text_files_raise_only_suite_errors(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "suite.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            suite = load_suite(path)
        except SuiteError:
            return
    with contextlib.suppress(SuiteError):
        expand_suite(suite, max_tests=2_000)


def test_the_suite_module_imports_no_broker_or_database() -> None:
    code = (
        "import sys, dtf.suite; "
        "bad = [m for m in ('celery', 'kombu', 'redis', 'duckdb') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == ""
