"""BigQuery clients for one project: REST and the Storage Read API, with credentials.

The clients honour a custom endpoint (an emulator or a private endpoint) for REST and for the
Storage Read API, and every call carries the configured timeout, so a missing endpoint fails
instead of hanging.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from ml.config import BigQuerySettings
from ml.errors import ConfigError, WarehouseError, one_line

if TYPE_CHECKING:
    from ml.warehouse.base import Relation


class BigQuery:
    """Clients for one BigQuery project, honouring a custom endpoint (an emulator or a private
    endpoint) for REST and for the Storage Read API."""

    def __init__(self, settings: BigQuerySettings) -> None:
        self.settings = settings
        self.project = settings.project
        self.timeout = settings.timeout_seconds
        self._client: Any = None
        self._storage: Any = None
        self._channel: Any = None
        self._credentials: Any = None

    # -- clients -----------------------------------------------------------------------------
    @property
    def credentials(self) -> Any:
        if self._credentials is None:
            self._credentials = _credentials(self.settings)
        return self._credentials

    @property
    def client(self) -> Any:
        if self._client is None:
            from google.api_core.client_options import ClientOptions
            from google.cloud import bigquery

            options = (
                ClientOptions(api_endpoint=self.settings.api_endpoint)
                if self.settings.api_endpoint
                else None
            )
            self._client = bigquery.Client(
                project=self.project,
                credentials=self.credentials,
                location=self.settings.location,
                client_options=options,
            )
        return self._client

    @property
    def retry(self) -> Any:
        from google.cloud import bigquery

        retry = bigquery.DEFAULT_RETRY
        with_timeout = getattr(retry, "with_timeout", None) or retry.with_deadline
        return with_timeout(self.timeout)

    def storage(self) -> Any:
        """The Storage Read API client, or None when reads must use REST.

        A custom REST endpoint without a storage endpoint means REST only: reads never go to
        Google's default endpoint while the rest of the traffic goes elsewhere.
        """
        s = self.settings
        if not s.storage_read_api:
            return None
        if self._storage is None:
            from google.cloud import bigquery_storage_v1

            endpoint = s.storage_api_endpoint
            if endpoint:
                url = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
                host_port = f"{url.hostname}:{url.port or 443}"
                if url.scheme == "http":
                    import grpc
                    from google.cloud.bigquery_storage_v1.services.big_query_read.transports import (
                        BigQueryReadGrpcTransport,
                    )

                    if not _is_loopback(url.hostname):
                        raise ConfigError(
                            f"config: warehouse.bigquery.storage_api_endpoint: plain http is only "
                            f"allowed on loopback (got {endpoint})"
                        )
                    self._channel = grpc.insecure_channel(host_port)
                    self._storage = bigquery_storage_v1.BigQueryReadClient(
                        transport=BigQueryReadGrpcTransport(channel=self._channel)
                    )
                else:
                    from google.api_core.client_options import ClientOptions

                    self._storage = bigquery_storage_v1.BigQueryReadClient(
                        credentials=self.credentials,
                        client_options=ClientOptions(api_endpoint=host_port),
                    )
            elif s.api_endpoint:
                return None
            else:
                self._storage = bigquery_storage_v1.BigQueryReadClient(credentials=self.credentials)
        return self._storage

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        self._storage = None

    # -- metadata and queries ----------------------------------------------------------------
    def table_id(self, relation: Relation) -> str:
        return f"{relation.database or self.project}.{relation.schema}.{relation.name}"

    def get_table(self, table_id: str) -> Any:
        return self.client.get_table(table_id, retry=self.retry, timeout=self.timeout)

    def exists(self, relation: Relation) -> bool:
        from google.api_core.exceptions import NotFound

        try:
            self.get_table(self.table_id(relation))
            return True
        except NotFound:
            return False
        except Exception as exc:  # noqa: BLE001 - unreachable endpoint, bad credentials
            raise WarehouseError(f"BigQuery: cannot look up {relation} ({one_line(exc)})") from None

    def query(self, sql: str, params: list[Any]) -> Any:
        """Run a parameterized query to completion; returns the finished job."""
        from google.cloud import bigquery

        config = bigquery.QueryJobConfig(query_parameters=params, use_legacy_sql=False)
        job = self.client.query(sql, job_config=config, retry=self.retry, timeout=self.timeout)
        job.result(retry=self.retry, timeout=self.timeout)
        return job


# -- credentials -----------------------------------------------------------------------------
def _credentials(s: BigQuerySettings) -> Any:
    """A keyfile's service account; none for an emulator on loopback; else the environment's
    application-default credentials (only ever looked up for a real endpoint)."""
    if s.keyfile:
        from google.oauth2 import service_account

        try:
            return service_account.Credentials.from_service_account_file(
                s.keyfile, scopes=["https://www.googleapis.com/auth/bigquery"]
            )
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"config: warehouse.bigquery.keyfile: cannot read {s.keyfile} ({one_line(exc)})"
            ) from None
    if s.api_endpoint and _is_loopback(urlparse(s.api_endpoint).hostname):
        from google.auth.credentials import AnonymousCredentials

        return AnonymousCredentials()
    import google.auth

    try:
        credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/bigquery"])
    except Exception as exc:  # noqa: BLE001 - DefaultCredentialsError and transport errors
        raise ConfigError(
            "config: warehouse.bigquery: no credentials (set BQ_KEYFILE to a service account "
            f"key, or log in with `gcloud auth application-default login`): {one_line(exc)}"
        ) from None
    return credentials


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
