"""Hostile matrices: every one is refused with a short message naming the file (exit 2 through the CLI), in
bounded time, or is a valid matrix; never a traceback, a hang or megabytes of output."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlc_farm.errors import MatrixError
from mlc_farm.matrix.load import load_matrix, parse_matrix
from tests.helpers import run_cli
from tests.test_matrix import BASE

HOSTILE_VALUES = [
    10**100, -(10**30), -1, 0, True, False, None, "", "x" * 300, "a\x00b", "../..", "/abs", "a/b", "x\n", "..",
    1.5, float("nan"), float("inf"), [], {}, [[[[[]]]]], {"a": {"b": {"c": {}}}}, "q4f16_l", "{org}/{model",
    "{nope}", "O9", "cuda", "💥" * 50, ["x"] * 50, "HUGE_INT", "models/a\x00b", "x" * 256 + "/y", "a\rb",
]  # fmt: skip
HUGE_INT = "9" * 5000  # written into the YAML text as a number: more digits than Python converts


def paths(doc: object, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value in a document."""
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += paths(v, (*prefix, i))
    return out


def assign(doc: dict, path: tuple, value: object) -> dict:
    doc = copy.deepcopy(doc)
    target = doc
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value
    return doc


DOC = {**BASE, "publish": {"org": "o"}, "include": [{"model": "a", "device": "cuda-sm90"}]}
PATHS = paths(DOC)


def outcome(text: str) -> None:
    """Valid, or MatrixError with a short message naming the file, in well under a second."""
    start = time.monotonic()
    try:
        parse_matrix(text, "hostile.yaml")
    except MatrixError as e:
        message = str(e)
        assert message.startswith("hostile.yaml: ") and len(message) < 20_000, message[:300]
    assert time.monotonic() - start < 2


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    path=st.sampled_from(PATHS),
    value=st.one_of(st.sampled_from(HOSTILE_VALUES), st.integers(), st.text(max_size=300), st.booleans()),
    drop=st.booleans(),
)
def test_generated_mutations_are_refused_cleanly(path: tuple, value: object, drop: bool) -> None:
    if drop:
        doc = copy.deepcopy(DOC)
        target = doc
        for p in path[:-1]:
            target = target[p]
        del target[path[-1]]
    else:
        doc = assign(DOC, path, value)
    try:
        text = yaml.safe_dump(doc, allow_unicode=True).replace("HUGE_INT", HUGE_INT)
    except yaml.YAMLError:
        return
    outcome(text)


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
    for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (BOMB + "quantizations: *i\n", "expands to more than 200,000 values"),
        (
            yaml.safe_dump(assign(DOC, ("models", 0, "overrides"), {"context_window_size": "N"})).replace(
                "N", HUGE_INT
            ),
            "models[0].overrides.context_window_size: Input should be a valid integer (got an integer of 5,000 digits)",
        ),
        (
            yaml.safe_dump(assign(DOC, ("models", 0, "source"), {"path": "models/a\x00b"})),
            "models[0].source.path: 'models/a\\x00b' holds a NUL or a line break",
        ),
        (
            yaml.safe_dump(assign(DOC, ("models", 0, "source"), {"path": "x" * 300})),
            "is too long for a path (components of at most 255 bytes",
        ),
        ("quantizations: " + "[" * 5000 + "]" * 5000 + "\n", "nests deeper than"),
        ("quantizations: [q4f16_1]\nquantizations: [q0f16]\n", "duplicate key 'quantizations'"),
        (yaml.safe_dump(assign(DOC, ("models", 0, "quantizations"), [])), "models[0].quantizations: an empty list"),
        (yaml.safe_dump(assign(DOC, ("models", 0, "devices"), [])), "models[0].devices: an empty list"),
        (yaml.safe_dump(assign(DOC, ("models", 0, "overrides"), {"context_window_size": True})), "valid integer"),
        (
            yaml.safe_dump(assign(DOC, ("models", 0, "overrides"), {"context_window_size": 10**40})),
            "less than or equal",
        ),
        (
            yaml.safe_dump(assign(DOC, ("publish", "repo"), "{org}/{model")),
            "publish.repo: '{org}/{model' is not a valid template",
        ),
        (
            yaml.safe_dump(assign(DOC, ("devices", 0, "pool"), "../..")),
            "devices[0].pool: '../..' is not a safe pool name",
        ),
        (yaml.safe_dump(assign(DOC, ("models", 0, "id"), "x" * 300)), "is not a safe model id"),
        (yaml.safe_dump(assign(DOC, ("models", 0, "id"), "a\x00b")), "models[0].id: 'a\\x00b' is not a safe model id"),
        (
            yaml.safe_dump(assign(DOC, ("devices", 0, "lib_ext"), "/../../../x.so")),
            "devices[0].lib_ext: String should match",
        ),
        (yaml.safe_dump(assign(DOC, ("models", 0, "id"), "ok\n")), "is not a safe model id"),
        (yaml.safe_dump({"quantizations": [], "devices": [], "models": []}), "quantizations: an empty list"),
        ("", "the top level must be a mapping"),
    ],
)
def test_known_hostile_inputs(text: str, expected: str) -> None:
    with pytest.raises(MatrixError) as info:
        parse_matrix(text, "hostile.yaml")
    assert expected in str(info.value) and len(str(info.value)) < 5_000


def test_structure_and_values_are_reported_together() -> None:
    doc = assign(DOC, ("models", 0, "quantizations"), ["q4f16_l"])
    doc["models"][1]["overides"] = {"context_window_size": 1}
    doc["devices"][1]["family"] = "tpu"
    with pytest.raises(MatrixError) as info:
        parse_matrix(yaml.safe_dump(doc), "m.yaml")
    assert info.value.problems == [
        "devices[1].family: Input should be 'cuda', 'rocm', 'vulkan', 'metal', 'opencl', 'webgpu', 'cpu', 'android' "
        "or 'iphone' (got 'tpu')",
        "models[0].quantizations[0]: unknown quantization 'q4f16_l'; did you mean 'q4f16_1'?",
        "models[1].overides: Extra inputs are not permitted (unknown field; did you mean 'overrides'?)",
    ]


def test_files_that_are_not_text_or_too_big(tmp_path: Path) -> None:
    binary = tmp_path / "m.yaml"
    binary.write_bytes(b"quantizations: [\xff\xfe]\n")
    with pytest.raises(MatrixError, match="not UTF-8 text"):
        load_matrix(binary)
    binary.write_bytes(b"#" * (5 << 20))
    with pytest.raises(MatrixError, match="a matrix is at most"):
        load_matrix(binary)
    done = run_cli("plan", "--matrix", str(binary))
    assert done.returncode == 2 and "a matrix is at most" in done.stderr and "Traceback" not in done.stderr


def test_huge_integers_and_impossible_paths_through_the_cli(tmp_path: Path) -> None:
    doc = assign(DOC, ("models", 0, "overrides"), {"prefill_chunk_size": "N"})
    doc = yaml.safe_dump(assign(doc, ("models", 1, "source"), {"path": "models/b\x00x"})).replace("N", HUGE_INT)
    matrix = tmp_path / "m.yaml"
    matrix.write_text(doc)
    done = run_cli("plan", "--matrix", str(matrix))
    said = " ".join(done.stderr.split())
    assert done.returncode == 2 and "Traceback" not in said and said.startswith(f"error: {matrix}: invalid matrix")
    assert "prefill_chunk_size: Input should be a valid integer (got an integer of 5,000 digits)" in said
    assert "models[1].source.path: 'models/b\\x00x' holds a NUL or a line break" in said and len(said) < 2_000
