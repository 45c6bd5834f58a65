"""Run inside the toolchain's own interpreter after distributions.py (never imported by mlc_farm): the names
mlc_llm's JIT gives the library of a model in its cache, `MLC_LLM_HOME/model_lib/<md5>.<ext>`, computed as
shared/mlc-reference describes ("How mlc_llm itself finds a model and its library"). Only the normalisation
of the model config needs the toolchain: `mlc_llm.model.MODELS[model_type].config.from_dict(...).asdict()`.

With `"present": {"library": PATH, "kind": "cuda"}` it first counts the devices of that kind here by loading
the library on `tvm.<kind>(i)` for i = 0, 1, ... (`tvm.relax.VirtualMachine` fails on an absent device), and
the keys are those of `KIND:0` to `KIND:n-1`.

usage: python - REQUEST_JSON
  (request: {"config": {mlc-chat-config.json's document}, "devices": ["cuda:0", "iphone", ...],
             "overrides": {"context_window_size": 4096, ...}, "opt": null, "present": null})
Prints {"keys": {device: {"md5": ..., "system_lib_prefix": ... or null}}} on its last line.
"""

# ruff: noqa: F821  (json and sys come from distributions.py, which runs first)

import hashlib

# The engine's overrides, in the order the overrides text lists them.
OVERRIDE_ORDER = ["context_window_size", "sliding_window_size", "prefill_chunk_size", "attention_sink_size",
                  "max_batch_size", "tensor_parallel_shards", "pipeline_parallel_stages", "disaggregation"]  # fmt: skip
MINUS_ONE_LEFT_OUT = {"context_window_size", "sliding_window_size", "attention_sink_size"}
OPT_TEXT = {
    None: "flashinfer=1;cublas_gemm=1;faster_transformer=0;cudagraph=1;cutlass=1;ipc_allreduce_strategy=NONE",
    "O2": "flashinfer=1;cublas_gemm=1;faster_transformer=0;cudagraph=1;cutlass=1;ipc_allreduce_strategy=NONE",
    "O3": "flashinfer=1;cublas_gemm=1;faster_transformer=1;cudagraph=1;cutlass=1;ipc_allreduce_strategy=AUTO",
}
SYSTEM_LIBRARY_DEVICES = {"iphone", "macabi", "android"}


def md5_of(obj):
    return hashlib.md5(json.dumps(obj, sort_keys=True, indent=2).encode("utf-8")).hexdigest()


def normalised_model_config(chat, overrides):
    from mlc_llm.model import MODELS

    config = dict(chat["model_config"])
    for name, value in chat.items():
        if name not in ("model_config", "model_type", "quantization"):
            config[name] = value
    for name in OVERRIDE_ORDER:
        if overrides.get(name) is not None:
            config[name] = overrides[name]
    return MODELS[chat["model_type"]].config.from_dict(config).asdict()


def overrides_text(overrides):
    pairs = []
    for name in OVERRIDE_ORDER:
        value = overrides.get(name)
        if value is None or (name in MINUS_ONE_LEFT_OUT and value == -1):
            continue
        pairs.append(f"{name}={value}")
    return ";".join(pairs)


def keys(chat, devices, overrides, opt):
    if opt not in OPT_TEXT:
        raise ValueError(f"opt {opt!r}: only O2 and O3 are documented")
    model_config = normalised_model_config(chat, overrides)
    out = {}
    for device in devices:
        key = {
            "model_config": model_config,
            "overrides": overrides_text(overrides),
            "opt": OPT_TEXT[opt],
            "device": device,
            "model_type": chat["model_type"],
        }
        prefix = None
        if device in SYSTEM_LIBRARY_DEVICES:
            prefix = f"{chat['model_type']}_{chat['quantization']}_{md5_of(key)}".replace("-", "_")
            key["system_lib_prefix"] = prefix
        key["quantization"] = chat["quantization"]
        out[device] = {"md5": md5_of(key), "system_lib_prefix": prefix}
    return out


def present(library, kind, most=16):
    import tvm

    lib = tvm.runtime.load_module(library)
    for index in range(most):
        try:
            tvm.relax.VirtualMachine(lib, getattr(tvm, kind)(index))
        except Exception:
            return index
    return most


def main(argv):
    request = read_request(argv[0])
    chat = request["config"]
    devices = request["devices"]
    if request.get("present"):
        kind = request["present"]["kind"]
        devices = [f"{kind}:{i}" for i in range(present(request["present"]["library"], kind))]
    print(json.dumps({"keys": keys(chat, devices, request.get("overrides") or {}, request.get("opt"))}))


if __name__ == "__main__":
    main(sys.argv[1:])
