"""A real S3 server for the tests: SeaweedFS on free ports of 127.0.0.1 (mlc_farm.farm.stack starts it), stopped
by its PID. Also used by benchmarks/transfer.py."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mlc_farm.farm.stack import Service, start_seaweed


@dataclass
class SeaweedS3:
    endpoint: str
    access_key: str
    secret_key: str
    service: Service

    @classmethod
    def start(cls, data_dir: Path, access_key: str = "farm-admin", secret_key: str = "farm-secret-0123") -> SeaweedS3:
        service = start_seaweed(data_dir, access_key, secret_key)
        return cls(service.url, access_key, secret_key, service)

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def stop(self) -> None:
        self.service.stop()
