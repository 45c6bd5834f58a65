"""Reading a credential is not talking to the Hub: a missing block is bad input naming its setting (exit 2), a
Prefect server that drops the connection or fails while a block is read is a service (exit 3), and neither is
reported as the Hugging Face Hub (issue 38, item 3). The faults come from a proxy of our own in front of the real
Prefect server."""

from __future__ import annotations

import uuid

import pytest

from mlc_farm import credentials
from mlc_farm.errors import BadInput, ServiceUnreachable
from mlc_farm.matrix.schema import HFSource
from mlc_farm.planning.sources import resolve_hf
from tests.faults import FaultyProxy


def test_a_missing_token_block_is_bad_input_not_an_unreachable_hub(
    prefect_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("MLC_FARM_HF_TOKEN_BLOCK", f"no-such-{uuid.uuid4().hex[:8]}")
    with pytest.raises(BadInput, match=r"MLC_FARM_HF_TOKEN_BLOCK='no-such-\w+': no Secret block") as refused:
        resolve_hf("m", HFSource(hf="org/tiny"))
    assert refused.value.exit_code == 2 and "Hub" not in str(refused.value)


@pytest.mark.parametrize("mode", ["reset", "500"])
def test_a_prefect_server_failing_while_a_block_is_read_is_a_service(prefect_api: str, mode: str) -> None:
    from prefect.blocks.system import Secret
    from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    proxy = FaultyProxy(prefect_api, failures=0)
    proxy.burst(3600, mode)
    try:
        settings = {PREFECT_API_URL: proxy.endpoint + "/api", PREFECT_CLIENT_MAX_RETRIES: 0}
        expected = "MLC_FARM_HF_TOKEN_BLOCK='any': the Prefect server"
        with temporary_settings(settings), pytest.raises(ServiceUnreachable, match=expected) as e:
            credentials.load_block(Secret, "any", "MLC_FARM_HF_TOKEN_BLOCK")
    finally:
        proxy.close()
    assert e.value.exit_code == 3
