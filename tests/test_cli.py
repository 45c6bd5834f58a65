"""What a person sees from the CLI when something goes wrong in normal life: one message, no traceback, a
documented exit code. Driven in-process with typer's CliRunner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlc_farm.cli import app
from mlc_farm.settings import load_settings
from tests.helpers import ROOT, cli

runner = CliRunner()


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    text = result.stdout + (result.stderr if result.stderr_bytes is not None else "")
    assert "Traceback" not in text
    return result.exit_code, " ".join(text.split())


def test_the_settings_file_is_read_under_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "mlc-farm.env"
    file.write_text("# the quick start's\nMLC_FARM_PARALLEL=7\nMLC_FARM_STORE='/srv/store one'\n")
    monkeypatch.setenv("MLC_FARM_SETTINGS_FILE", str(file))
    monkeypatch.delenv("MLC_FARM_STORE", raising=False)
    assert (load_settings().parallel, load_settings().store) == (7, "/srv/store one")
    monkeypatch.setenv("MLC_FARM_PARALLEL", "3")  # the environment wins
    assert load_settings().parallel == 3
    assert load_settings() is load_settings()  # read once while nothing they come from changes
    file.write_text(file.read_text().replace("one", "two"))  # the same size, rewritten in place
    assert load_settings().store == "/srv/store two"
    file.write_text("MLC_FARM_STEP_TIMEOUT=soon\n")
    code, said = run("ls")
    assert code == 2 and f"MLC_FARM_STEP_TIMEOUT='soon' (in {file})" in said


def test_a_stop_is_explained_without_loading_prefect() -> None:
    """A command stopped before it loaded Prefect (planning, a pull) ends at once: explaining the stop imports
    neither Prefect nor httpx, which alone take seconds (over ten on a loaded machine)."""
    ask = (
        "import sys, signal; from mlc_farm.cli import _errors as e; "
        "print(e.message_for(KeyboardInterrupt())[0], e.message_for(e.Terminated())[0], "
        "sorted({m.split('.')[0] for m in sys.modules} & {'prefect', 'httpx'}))"
    )
    done = subprocess.run([sys.executable, "-c", ask], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.split() == ["130", "143", "[]"]


def test_a_ctrl_c_while_the_command_imports_is_one_line_not_a_traceback() -> None:
    """The first half second of every command imports its modules, before its stop handlers are set: a Ctrl-C
    there (made certain here by an import that raises it) ends with exit 130 and one line."""
    ask = (
        "import sys\n"
        "class CtrlC:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'typer': raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, CtrlC())\n"
        "sys.argv = ['mlc-farm', 'plan']\n"
        "from mlc_farm.cli import main\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", ask], capture_output=True, text=True, cwd=ROOT)
    assert (done.returncode, done.stdout) == (130, "")
    assert done.stderr == "error: stopped by SIGINT before the command began: nothing was touched\n"


def test_a_file_replaced_whole_is_the_old_or_the_new_and_leaves_nothing_beside_it(tmp_path: Path) -> None:
    from mlc_farm.whole_files import replace_whole

    path = tmp_path / "mlc-farm.env"
    path.write_text("MLC_FARM_STORE=./artifacts\n")
    path.chmod(0o640)
    with pytest.raises(UnicodeEncodeError):
        replace_whole(path, "MLC_FARM_STORE=\udc80", 0o640)  # a write that fails half-way
    assert path.read_text() == "MLC_FARM_STORE=./artifacts\n" and os.listdir(tmp_path) == ["mlc-farm.env"]
    replace_whole(path, "MLC_FARM_STORE=s3://b/p\n", 0o640)
    assert path.read_text() == "MLC_FARM_STORE=s3://b/p\n" and oct(path.stat().st_mode & 0o777) == "0o640"
    assert os.listdir(tmp_path) == ["mlc-farm.env"]


def test_a_settings_block_wins_until_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlc_farm.settings import export_settings_file, remove_settings_block, set_settings_block

    file = tmp_path / "mlc-farm.env"
    before = "# the quick start's\nMLC_FARM_STORE='/srv/stand-in'\n"
    file.write_text(before)
    file.chmod(0o640)
    monkeypatch.setenv("MLC_FARM_SETTINGS_FILE", str(file))
    monkeypatch.delenv("MLC_FARM_STORE", raising=False)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    for _ in range(2):  # written again, the block replaces itself
        set_settings_block('farm up --dir "/x"', {"MLC_FARM_STORE": "s3://b/p", "PREFECT_API_URL": "http://h/api"})
    assert file.read_text().count("farm up") == 2 and oct(file.stat().st_mode & 0o777) == "0o640"
    assert load_settings().store == "s3://b/p"
    export_settings_file()
    assert os.environ["PREFECT_API_URL"] == "http://h/api"
    monkeypatch.setenv("PREFECT_API_URL", "http://mine/api")  # the environment wins
    export_settings_file()
    assert os.environ["PREFECT_API_URL"] == "http://mine/api"
    assert remove_settings_block('farm up --dir "/other"') is None
    assert remove_settings_block('farm up --dir "/x"') == file and file.read_text() == before
    assert load_settings().store == "/srv/stand-in"
    set_settings_block("t", {"MLC_FARM_HF_ORG": "it's"})
    assert load_settings().hf_org == "it's"
    file.write_text("")
    set_settings_block("t", {"MLC_FARM_HF_ORG": "o"})
    remove_settings_block("t")
    assert not file.exists()  # it held nothing else


@pytest.mark.parametrize(
    ("value", "seconds"), [("14400", 14400), ("4h", 14400), ("4 h", 14400), ("1h30m", 5400), ("90s", 90)]
)
def test_durations(monkeypatch: pytest.MonkeyPatch, value: str, seconds: float) -> None:
    monkeypatch.setenv("MLC_FARM_STEP_TIMEOUT", value)
    assert load_settings().step_timeout == seconds


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("MLC_FARM_PARALLEL", "two", "MLC_FARM_PARALLEL='two': Input should be a valid integer"),
        ("MLC_FARM_PARALLEL", "0", "MLC_FARM_PARALLEL='0': Input should be greater than or equal to 1"),
        (
            "MLC_FARM_STEP_TIMEOUT",
            "4 hours",
            "MLC_FARM_STEP_TIMEOUT='4 hours': expected seconds or a duration like '4h'",
        ),
        ("MLC_FARM_STALE_UPLOAD_HOURS", "nan", "MLC_FARM_STALE_UPLOAD_HOURS='nan'"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    code, text = run("ls")
    assert code == 2 and text.startswith("error: invalid setting: ") and message in text


def test_stores_that_cannot_be_used(tmp_path: Path) -> None:
    code, text = run("ls", "--store", "ftp://host/x")
    assert code == 2 and "unknown scheme 'ftp://'" in text
    assert not Path("ftp:").exists()
    code, text = run("ls", "--store", str(tmp_path / "nothing-here"))
    assert code == 2 and "no store at" in text and not (tmp_path / "nothing-here").exists()
    code, text = run("gc", "--min-age-hours", "nan", "--store", str(tmp_path))
    assert code == 2 and "--min-age-hours: nan is not a number of hours" in text


def test_the_small_things_a_user_meets_are_clear_messages_with_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each from a fleet's attack (issue 31): bad input named, shortened and redacted, never an internal error."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-printed")
    said = dict.fromkeys(
        ("bucket", "endpoint", "age", "expires", "index", "home", "empty", "file", "long", "notify"), (0, "")
    )
    said["bucket"] = run("ls", "--store", "s3://Bad_Bucket!/x")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9/?token=SECRET")
    said["endpoint"] = run("ls", "--store", "s3://bucket/x")
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    said["age"] = run("gc", "--min-age-hours", "1e308", "--store", str(tmp_path))
    said["expires"] = run("url", "m", "q4f16_1", "--expires", "-1", "--store", str(tmp_path))
    said["index"] = run("install", "m", "q4f16_1", "--device-index", "1_0", "--store", str(tmp_path))
    (tmp_path / "a-file").write_text("")
    said["home"] = run("install", "m", "q4f16_1", "--mlc-home", str(tmp_path / "a-file"), "--store", str(tmp_path))
    said["empty"] = run("ls", "--store", "")
    said["file"] = run("ls", "--store", "file://")
    said["long"] = run("ls", "--store", "x" * 3000)
    said["notify"] = run("farm", "init", "--notify", "ops")
    assert all(code == 2 for code, _ in said.values()), {k: v for k, v in said.items() if v[0] != 2}
    texts = {k: " ".join(text.split()) for k, (_, text) in said.items()}
    assert "'Bad_Bucket!' is not a bucket name" in texts["bucket"]
    assert "AWS_ENDPOINT_URL 'http://127.0.0.1:9/'" in texts["endpoint"] and "SECRET" not in texts["endpoint"]
    assert "--min-age-hours: 1e+308 is not a number of hours from 0 to" in texts["age"]
    assert "--expires" in texts["expires"] and "greater than or equal to 1" in texts["expires"]
    assert "--device-index '1_0': give device indices" in texts["index"]
    assert "--mlc-home" in texts["home"] and "not a file" in texts["home"] and "--as" not in texts["home"]
    assert "--store '': give a store" in texts["empty"] and "no directory after file://" in texts["file"]
    assert "an address of 3000 characters" in texts["long"] and len(texts["long"]) < 300
    assert "--notify 'ops': give TYPE/NAME" in texts["notify"]
    assert "internal error" not in " ".join(texts.values())
    # 5,000 indices are a typo, not 5,000 copies of a library.
    code, text = run("install", "m", "q4f16_1", "--device-index", ",".join(map(str, range(5000))), "--store",
                     str(tmp_path))  # fmt: skip
    assert code == 2 and "below 64" in text and len(text) < 400


def test_not_found_is_exit_2_everywhere(tmp_path: Path) -> None:
    (tmp_path / "catalog").mkdir()
    for args in (["pull", "m", "q4f16_1", "-o", str(tmp_path / "o")], ["validate", "m", "q4f16_1"],
                 ["history", "m", "q4f16_1"], ["log", "m", "q4f16_1"]):  # fmt: skip
        code, text = run(*args, "--store", str(tmp_path))
        assert code == 2 and ("no build" in text or "no checked build" in text), (args, text)


def test_an_unreachable_s3_endpoint_is_exit_3(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-printed")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    code, text = run("ls", "--store", "s3://bucket/prefix")
    assert code == 3 and "cannot reach http://127.0.0.1:9 for s3://bucket" in text and "not-printed" not in text


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--debug", "ls", "--store", "ftp://host/x"])
    assert result.exit_code != 0 and result.exception is not None and "unknown scheme" in str(result.exception)


def test_version() -> None:
    code, text = run("--version")
    assert code == 0 and text.startswith("mlc-farm ")


@pytest.mark.slow  # it waits out the timeouts on purpose
def test_an_endpoint_that_never_answers_fails_in_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    """A black hole: the connection is accepted and nothing ever comes back."""
    import socket
    import time

    hole = socket.create_server(("127.0.0.1", 0), backlog=64)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{hole.getsockname()[1]}")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        start = time.monotonic()
        code, text = run("ls", "--store", "s3://bucket/prefix")
        assert time.monotonic() - start < 30
        assert code == 3 and "no answer in 10 s" in text and "check AWS_ENDPOINT_URL" in text
    finally:
        hole.close()


def test_tiny_model_refuses_what_it_cannot_or_must_not_write(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("mine")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    cases = [
        ((str(tmp_path / "afile"),), "a file is in the way"),
        ((str(tmp_path / "full"),), "is not empty: write into a new directory, or add --force"),
        (("/proc/no/such",), "cannot write there"),
        ((str(tmp_path / "new"), "--seed", "-5"), "Invalid value for '--seed'"),
    ]
    for args, message in cases:
        code, text = run("tiny-model", *args)
        assert code == 2 and message in text and "Traceback" not in text, text
    assert (tmp_path / "afile").read_text() == "mine" and [p.name for p in (tmp_path / "full").iterdir()] == [
        "notes.txt"
    ]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith((".", "new"))]  # nothing half-written
    code, _ = run("tiny-model", str(tmp_path / "full"), "--force")
    assert (
        code == 0 and (tmp_path / "full" / "config.json").is_file() and not (tmp_path / "full" / "notes.txt").exists()
    )


@pytest.mark.parametrize(
    "args",
    [
        ["pull", "../../x", "q0f16", "-o", "out"],
        ["pull", "m", "q0f16/../../y", "-o", "out"],
        ["pull", "m", "q0f16", "--device", "../cpu", "-o", "out"],
        ["validate", "../x", "q0f16"],
        ["url", "x/../../y", "q0f16"],
        ["log", "../x", "q0f16"],
        ["publish", "[/x]", "q0f16"],
    ],
)
def test_names_on_the_command_line_follow_the_matrix_rules(tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "store" / "catalog").mkdir(parents=True)
    code, text = run(*args, "--store", str(tmp_path / "store"))
    assert code == 2 and "is not a safe" in text, text
    assert not (tmp_path / "out").exists()


def test_keys_markup_and_long_names_in_messages(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    code, text = run("log", "../../etc", "--store", str(tmp_path / "store"))
    assert code == 2 and "a build key is hex" in text
    code, text = run("pull", "x" * 5000, "q0f16", "-o", "out", "--store", str(tmp_path / "store"))
    assert code == 2 and len(text) < 400 and "(5002 chars)" in text  # shortened, as the matrix errors are
    code, text = run("ls", "--store", str(tmp_path / "[/x]" / "[bold]y"))
    assert code == 2 and "[/x]/[bold]y" in text  # printed as it is: rich markup is never parsed from a value


@pytest.mark.parametrize("scheme", ["ftp", "http", "file", "s3"])
def test_credentials_in_a_store_url_are_never_printed(scheme: str) -> None:
    code, text = run("ls", "--store", f"{scheme}://farmer:hunter2secret@host/x")
    assert code == 2 and "hunter2secret" not in text and "farmer" not in text
    assert f"{scheme}://***@host/x" in text


@pytest.mark.parametrize("base", ["javascript:alert(1)", "http://a b/", "file:///etc", "https://u:p@host/", "/rel"])
def test_export_refuses_a_base_url_no_runtime_should_fetch(tmp_path: Path, base: str) -> None:
    (tmp_path / "store").mkdir()
    code, text = run("export", "webllm", "--base-url", base, "--store", str(tmp_path / "store"))
    assert code == 2 and "give an http(s):// address" in text and ":p@" not in text


@pytest.mark.slow
def test_an_unreachable_prefect_api_is_exit_3(tiny_matrix: Path) -> None:
    done = cli("build", "--matrix", str(tiny_matrix), env={"PREFECT_API_URL": "http://127.0.0.1:9/api"}, timeout=120)
    assert done.returncode == 3 and "Traceback" not in done.stderr, done.stderr
    assert "cannot reach http://127.0.0.1:9/api/" in done.stderr and "PREFECT_API_URL" in done.stderr


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_an_offline_build_names_its_unresolved_sources_and_exits_3(tmp_path: Path) -> None:
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(
        "quantizations: [q0f16]\ndevices: [{name: cpu, family: cpu, target: llvm}]\n"
        "models: [{id: qwen, source: {hf: Qwen/Qwen2.5-0.5B-Instruct, revision: main}, conv_template: LM}]\n"
    )
    done = cli("build", "--matrix", str(matrix), "--store", str(tmp_path / "s"), env={"HF_HUB_OFFLINE": "1"})
    said = " ".join(done.stderr.split())
    assert done.returncode == 3 and "Traceback" not in said, said
    assert "the Hugging Face Hub could not be reached" in said and "1 unresolved (qwen: Qwen/Qwen2.5-0.5B" in said


def test_an_export_with_nothing_to_export_says_why(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    for runtime, wanted in (("webllm", "webgpu"), ("app", "android or iphone")):
        code, text = run("export", runtime, "--store", str(tmp_path / "store"))
        assert code == 1 and f"nothing to export for {runtime}" in text and f"none with a library for {wanted}" in text


def test_a_store_that_cannot_be_written_is_refused_before_anything_runs(tiny_matrix: Path, tmp_path: Path) -> None:
    file = tmp_path / "a-file"
    file.write_text("not a store")
    for store, said in ((str(file), "is a file, not a directory"), ("/proc/mlc-farm-x", "cannot be written")):
        code, text = run("build", "--matrix", str(tiny_matrix), "--store", store)
        assert code == 2 and said in text, text


def test_output_that_is_not_a_terminal_never_cuts_a_name(tiny_matrix: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["plan", "--matrix", str(tiny_matrix), "--store", str(tmp_path / "s")])
    lines = result.stdout.splitlines()
    assert result.exit_code == 0 and "…" not in result.stdout
    rows = [line for line in lines if line.startswith("│ tiny-llama-")]
    assert len(rows) == 8 and all("to build" in row for row in rows)  # one line per cell, nothing wrapped


def test_at_80_columns_every_table_keeps_model_quantization_and_device_whole(tiny_matrix: Path, tmp_path: Path) -> None:
    from rich.console import Console

    from mlc_farm.report.summary import CellRow, Summary
    from tests.helpers import cli

    planned = cli("plan", "--matrix", str(tiny_matrix), "--store", str(tmp_path / "s"), env={"COLUMNS": "80"})
    lines = planned.stdout.splitlines()
    rows = [line for line in lines if line.startswith("│ tiny-llama-")]
    table = [line for line in lines if line[:1] in "┏┃┡│└"]
    assert planned.returncode == 0 and "…" not in planned.stdout and max(map(len, table)) <= 80, planned.stdout
    assert len(rows) == 8 and all("to build: convert" in row for row in rows)  # the keys gave way, not the ids
    assert {row.split("│")[1].strip() for row in rows} == {"tiny-llama-a", "tiny-llama-b"}
    long = "a-model-with-a-rather-long-name-7b-instruct"
    row = CellRow(model=long, quantization="q4f16_1", device="cuda-sm90a", convert="built", config="built",
                  library="failed", validation="fits; ran on cuda, 181 tok/s", status="failed", log="x" * 80,
                  detail="compile failed: " + "y" * 200)  # fmt: skip
    narrow = Console(width=80, record=True)
    narrow.print(Summary(rows=[row], steps={}).table())
    text = narrow.export_text()
    assert long in text and "q4f16_1" in text and "cuda-sm90a" in text and "…" not in text


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["plan", "--format", "xml"], "'xml' is not one of 'table', 'json'"),
        (["farm", "init", "--type", "nomad"], "'nomad' is not one of 'process', 'docker', 'kubernetes'"),
        (["export", "gguf"], "'gguf' is not one of 'webllm', 'app', 'mlc-serve'"),
    ],
)
def test_choices_are_checked_by_typer_and_listed(args: list[str], said: str) -> None:
    code, text = run(*args)
    assert code == 2 and said in text.replace("│ ", "").replace(" │", "")
    help_text = runner.invoke(app, [*args[:-2], "--help"] if args[0] != "export" else ["export", "--help"]).stdout
    assert said.split("one of ")[1].split(",")[0].strip("'") in help_text  # the choices are in --help


def test_secrets_in_a_clients_exception_text_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlc_farm.errors import redact_urls

    monkeypatch.setenv("HF_TOKEN", "hf_abcdefgh12345678")
    said = redact_urls(
        "EndpointResolutionError: http://u:pw@host:9/?token=SECRET1&x=1 and "
        "https://b.s3.example/k?X-Amz-Credential=AKIA%2F1&X-Amz-Signature=deadbeef; auth hf_abcdefgh12345678"
    )
    assert "pw" not in said and "SECRET1" not in said and "deadbeef" not in said and "AKIA" not in said
    assert "hf_abcdefgh12345678" not in said and "x=1" in said and "host:9" in said


def test_whatever_a_stop_interrupts_ends_as_the_stop() -> None:
    """A SIGTERM that lands in a lock's bookkeeping makes CPython raise `release unlocked lock` instead of the
    stop (one SIGTERM in five during a build): the command still ends as stopped, exit 143, not exit 1."""
    code = (
        "import signal, typer; from mlc_farm.cli import _errors\n"
        "def run():\n    _errors._signalled.append(signal.SIGTERM)\n    raise RuntimeError('release unlocked lock')\n"
        "app = typer.Typer(); app.command()(_errors.handled(run)); app()"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 143 and "stopped by SIGTERM" in done.stderr, done.stderr
    assert "release unlocked lock" not in done.stderr and "internal error" not in done.stderr


def test_usage_errors_and_pull_errors_are_one_line_like_every_other(tmp_path: Path) -> None:
    """Typer's boxed panel is not the farm's style: a usage error is one `error:` line naming the help to read;
    and an error before any byte moves is not preceded by the empty line of a progress bar (issue 39, item 7)."""
    (tmp_path / "catalog").mkdir()
    cases = {
        ("url", "m", "q4f16_1", "--expires", "-1"): "error: Invalid value for '--expires': Input should be greater "
        "than or equal to 1 (`python -m mlc_farm.cli url --help`)",
        ("ls", "--bogus"): "error: No such option: --bogus (`python -m mlc_farm.cli ls --help`)",
        ("pull", "m", "q4f16_1", "-o", str(tmp_path / "o"), "--store", str(tmp_path)): "error: ",
    }
    for args, said in cases.items():
        done = cli(*args)
        assert done.returncode == 2 and done.stderr.startswith(said), (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and "╭" not in done.stderr, done.stderr


def test_an_output_under_a_file_says_which_file(tmp_path: Path) -> None:
    from mlc_farm.errors import BadInput
    from mlc_farm.output_dir import replacing

    (tmp_path / "a-file").write_text("")
    with (
        pytest.raises(BadInput, match=r"-o .*/a-file/sub: cannot write there \(.*/a-file is a file, not a directory\)"),
        replacing(tmp_path / "a-file" / "sub", "-o"),
    ):
        pass
