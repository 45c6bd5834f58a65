"""Double of `mlc_llm.conversation_template`: ConvTemplateRegistry._conv_templates (name -> template)."""

from __future__ import annotations

from typing import Any, ClassVar

_IM = {"system_template": "<|im_start|>system\n{system_message}<|im_end|>\n", "system_prefix_token_ids": None,
       "roles": {"user": "<|im_start|>user", "assistant": "<|im_start|>assistant"}, "seps": ["<|im_end|>\n"],
       "role_content_sep": "\n", "role_empty_sep": "\n"}  # fmt: skip
_LLAMA3 = {"system_template": "<|start_header_id|>system<|end_header_id|>\n\n{system_message}<|eot_id|>",
           "system_prefix_token_ids": [128000], "stop_token_ids": [128001, 128009],
           "roles": {"user": "<|start_header_id|>user", "assistant": "<|start_header_id|>assistant"},
           "seps": ["<|eot_id|>"], "role_content_sep": "<|end_header_id|>\n\n",
           "role_empty_sep": "<|end_header_id|>\n\n"}  # fmt: skip


class ConvTemplateRegistry:
    _conv_templates: ClassVar[dict[str, dict[str, Any]]] = {
        "LM": {"system_template": "{system_message}", "system_prefix_token_ids": [1], "stop_token_ids": [2],
               "roles": {"user": "", "assistant": ""}, "seps": [""], "role_content_sep": "", "role_empty_sep": ""},
        "llama-3": _LLAMA3,
        "llama-3_1": _LLAMA3,
        "chatml": {**_IM, "stop_token_ids": [2]},
        "qwen2": {**_IM, "stop_token_ids": [151643, 151645]},
        "qwen3": {**_IM, "stop_token_ids": [151643, 151645]},
        "phi-4": {**_IM, "stop_token_ids": [100257, 100265]},
        "gemma3_instruction": {"system_template": "{system_message}", "system_prefix_token_ids": [2],
                               "stop_token_ids": [1, 106], "roles": {"user": "<start_of_turn>user",
                               "assistant": "<start_of_turn>model"}, "seps": ["<end_of_turn>\n"],
                               "role_content_sep": "\n", "role_empty_sep": "\n"},
        "redpajama_chat": {"system_template": "{system_message}", "system_prefix_token_ids": None,
                           "stop_token_ids": [0], "roles": {"user": "<human>", "assistant": "<bot>"},
                           "seps": ["\n"], "role_content_sep": ": ", "role_empty_sep": ":"},
    }  # fmt: skip

    @classmethod
    def get_conv_template(cls, name: str) -> dict[str, Any] | None:
        return cls._conv_templates.get(name)
