"""What signatures and provenance add (run by hand): seconds to sign an entry, a published folder and its
provenance, and to verify an entry before a pull, against the build that made it; bytes they add to a published
folder.

The baseline, measured in the same run, is a real embedded build of one tiny cell (`mlc-farm build`, toolchain
double, Prefect's temporary server: what a user's build costs end to end). The signatures are then made from that
build's store (offline, the farm's code); and again for a synthetic folder of --files files (a 70B model in
q4f16_1 has ~600 weight shards), since a signature's payload grows with the number of files, not their size.

    PYTHONPATH=tests/double:. .venv/bin/python benchmarks/signing.py [--files 600] [--repeat 5]
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
from pathlib import Path

from benchmarks.fidelity import built_cell, median_seconds
from mlc_farm.distribute.pull import entry_files
from mlc_farm.records.reads import read_entry
from mlc_farm.store.local import LocalStore
from mlc_farm.trust import keys, provenance, signatures
from mlc_farm.trust.entry_signatures import verified


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
        assert entry is not None
        files = entry_files(store, entry)
        digests = {p: f.sha256 for p, f in files.items()}
        key, trusted = keys.signing_key(), keys.trusted_keys()
        records = provenance.entry_records(store, entry)
        sign_s = median_seconds(lambda: signatures.sign(digests, "tiny", key), args.repeat)
        statement = provenance.statement(entry, records, digests)
        prov_s = median_seconds(lambda: signatures.sign_statement(statement, key), args.repeat)
        verify_s = median_seconds(lambda: verified(store, entry, files, True, False), args.repeat)
        folder = sum(f.size for f in files.values())
        sig_bytes = len(signatures.sign(digests, "tiny", key).encode())
        prov_bytes = len(signatures.sign_statement(statement, key).encode())
        print(f"baseline: one tiny cell built end to end in {build_s:.1f} s; its folder {folder / 1e6:.2f} MB in "
              f"{len(files)} files")  # fmt: skip
        print(f"sign the entry  {sign_s * 1e3:7.1f} ms  ({sign_s / build_s:.4f}x the build)")
        print(f"sign provenance {prov_s * 1e3:7.1f} ms  ({prov_s / build_s:.4f}x the build)")
        print(f"verify a pull   {verify_s * 1e3:7.1f} ms  ({verify_s / build_s:.4f}x the build)")
        print(f"model.sig {sig_bytes} B + provenance {prov_bytes} B = "
              f"{(sig_bytes + prov_bytes) / folder:.4%} of the folder")  # fmt: skip
        many = {f"params_shard_{i}.bin": hashlib.sha256(str(i).encode()).hexdigest() for i in range(args.files)}
        many_s = median_seconds(lambda: signatures.sign(many, "big", key), args.repeat)
        many_bytes = len(signatures.sign(many, "big", key).encode())
        check_s = median_seconds(
            lambda: signatures.signed_files(signatures.sign(many, "big", key), trusted, "big"), args.repeat
        )
        print(f"{args.files} files: sign {many_s * 1e3:.1f} ms ({many_s / sign_s:.1f}x the tiny entry), sign and "
              f"verify {check_s * 1e3:.1f} ms, model.sig {many_bytes / 1e3:.0f} kB")  # fmt: skip


if __name__ == "__main__":
    main()
