"""What signatures and attestations cost (run by hand): seconds to attest a build, to sign an entry (and its
provenance) from its attested records, and to verify an entry before a pull, against the build that made it;
seconds a nightly's look-ups spend verifying attestations; bytes they add.

The baseline, measured in the same run, is a real embedded build of one tiny cell (`mlc-farm build`, toolchain
double, Prefect's temporary server: what a user's build costs end to end). The signatures are then made from that
build's store (offline, the farm's code); and again for a synthetic entry of --files files (a 70B model in
q4f16_1 has ~600 weight shards), since a signature's payload grows with the number of files, not their size.
Attestations live in the build records, so a nightly's look-ups make no more GETs than before: what they add is
the verification, timed here per record against reading and parsing the record (what each look-up did before).

    PYTHONPATH=tests/double:. .venv/bin/python benchmarks/signing.py [--files 600] [--repeat 5]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
from pathlib import Path

from benchmarks.fidelity import built_cell, median_seconds
from mlc_farm.records.reads import load_record, read_entry
from mlc_farm.store.local import LocalStore
from mlc_farm.trust import attestations, dsse, keys, signatures
from mlc_farm.trust.entry_signatures import sign_entry, trusted_files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=600)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlc-farm-bench-") as tmp:
        root = Path(tmp)
        build_s = built_cell(root)
        store = LocalStore(root / "store")
        entry = read_entry(store, "tiny", "q4f16_1")
        assert entry is not None and entry.signature is not None
        key, trusted = keys.signing_key(), keys.trusted_keys()
        record = load_record(store, entry.convert)
        assert record is not None

        def attested(k: str):  # type: ignore[no-untyped-def]
            return attestations.attested(store, k, trusted)

        attest_s = median_seconds(lambda: attestations.attest(record, key), args.repeat)
        load_s = median_seconds(lambda: load_record(store, entry.convert), args.repeat)
        check_s = median_seconds(lambda: attested(entry.convert), args.repeat)
        sign_s = median_seconds(lambda: sign_entry(store, entry, key, attested), args.repeat)
        verify_s = median_seconds(lambda: trusted_files(store, "tiny", "q4f16_1"), args.repeat)
        _, files = trusted_files(store, "tiny", "q4f16_1")
        folder = sum(f.size for f in files.values())
        sig_bytes = len(json.dumps(entry.signature))
        att_bytes = len(json.dumps(record.attestation))
        print(f"baseline: one tiny cell built end to end in {build_s:.1f} s; its folder {folder / 1e6:.2f} MB in "
              f"{len(files)} files")  # fmt: skip
        print(f"attest a build        {attest_s * 1e3:7.2f} ms  ({attest_s / build_s:.5f}x the build)")
        print(f"sign an entry         {sign_s * 1e3:7.2f} ms  ({sign_s / build_s:.5f}x the build; with provenance)")
        print(f"verify before a pull  {verify_s * 1e3:7.2f} ms  ({verify_s / build_s:.5f}x the build)")
        print(f"a nightly's look-up   {check_s * 1e3:7.2f} ms with its attestation verified, {load_s * 1e3:.2f} ms "
              f"without ({check_s / load_s:.1f}x; 0 more GETs)")  # fmt: skip
        print(f"model.sig {sig_bytes} B, an attestation {att_bytes} B")
        many = {f"params_shard_{i}.bin": hashlib.sha256(str(i).encode()).hexdigest() for i in range(args.files)}
        many_s = median_seconds(lambda: signatures.sign(many, "big", key), args.repeat)
        many_bytes = len(json.dumps(signatures.sign(many, "big", key)))
        both_s = median_seconds(
            lambda: signatures.files_of(dsse.verify(signatures.sign(many, "big", key), trusted, "big").statement, "b"),
            args.repeat,
        )
        print(f"{args.files} files: sign {many_s * 1e3:.1f} ms ({many_s / max(sign_s, 1e-9):.1f}x the tiny entry), "
              f"sign and verify {both_s * 1e3:.1f} ms, model.sig {many_bytes / 1e3:.0f} kB")  # fmt: skip


if __name__ == "__main__":
    main()
