"""The BigQuery side of the warehouse: clients for one project, and the SQL pieces every query
shares.

ibis compiles filter values into the SQL text, so queries here are built with quoted identifiers
and typed query parameters (`ScalarQueryParameter`), never pasted values. The clients honour a
custom endpoint (an emulator or a private endpoint) for REST and for the Storage Read API, and
every call carries the configured timeout, so a missing endpoint fails instead of hanging.
Reads live in `ml.bigquery_read`, writes in `ml.bigquery_write`; `BigQuery` is the one object
the warehouse talks to.
"""

from __future__ import annotations

import datetime as dt
import decimal
import ipaddress
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from ml.config import BigQuerySettings
from ml.errors import ConfigError, WarehouseError, one_line

if TYPE_CHECKING:
    import pyarrow as pa

    from ml.bigquery_write import BigQuerySliceWriter
    from ml.dbt import Relation


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

    def ibis_connection(self) -> Any:
        """An ibis BigQuery backend on the same clients (for ad-hoc expressions)."""
        import ibis

        return ibis.bigquery.connect(
            client=self.client,
            storage_client=self.storage(),
            credentials=self.credentials,
            project_id=self.project,
            dataset_id=self.settings.dataset,
            location=self.settings.location,
        )

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

    def _query(self, sql: str, params: list[Any]) -> Any:
        from google.cloud import bigquery

        config = bigquery.QueryJobConfig(query_parameters=params, use_legacy_sql=False)
        job = self.client.query(sql, job_config=config, retry=self.retry, timeout=self.timeout)
        job.result(retry=self.retry, timeout=self.timeout)
        return job

    # -- reading (ml.bigquery_read) ----------------------------------------------------------
    def columns(self, relation: Relation) -> dict[str, str]:
        from ml.bigquery_read import column_kinds

        return column_kinds(self, relation)

    def read_batches(
        self,
        relation: Relation,
        columns: list[str],
        filters: Mapping[str, Any],
        batch_size: int,
    ) -> Iterator[pa.RecordBatch]:
        from ml.bigquery_read import read_batches

        return read_batches(self, relation, columns, filters, batch_size)

    def read_arrow(
        self, relation: Relation, columns: list[str], filters: Mapping[str, Any]
    ) -> pa.Table:
        from ml.bigquery_read import read_arrow

        return read_arrow(self, relation, columns, filters)

    def key_stats(
        self, relation: Relation, keys: list[str], filters: Mapping[str, Any]
    ) -> dict[str, Any]:
        from ml.bigquery_read import key_stats

        return key_stats(self, relation, keys, filters)

    # -- writing (ml.bigquery_write) ---------------------------------------------------------
    def replace_tables(self, dataset: str, tables: Mapping[str, pa.Table]) -> None:
        from ml.bigquery_write import replace_tables

        replace_tables(self, dataset, tables)

    def slice_writer(
        self,
        dataset: str,
        name: str,
        slice_: Mapping[str, Any],
        constants: Mapping[str, tuple[Any, Any]],
    ) -> BigQuerySliceWriter:
        from ml.bigquery_write import BigQuerySliceWriter

        return BigQuerySliceWriter(self, dataset, name, slice_, constants)


# -- SQL building: identifiers quoted and validated, values always as typed parameters ---------
def checked_ident(name: str) -> str:
    if not name or any(ch in name for ch in "`\\\n\r\x00"):
        raise ConfigError(f"invalid BigQuery identifier {name!r}")
    return name


def quote_ident(name: str) -> str:
    return f"`{checked_ident(name)}`"


def table_ref(table_id: str) -> str:
    return ".".join(quote_ident(part) for part in table_id.split("."))


def where_sql(
    filters: Mapping[str, Any], prefix: str, alias: str | None = None
) -> tuple[str, list]:
    terms, params = [], []
    for i, (column, value) in enumerate(filters.items()):
        name = f"{prefix}{i}"
        col = f"{alias}.{quote_ident(column)}" if alias else quote_ident(column)
        terms.append(f"{col} = @{name}")
        params.append(query_parameter(name, value, column))
    return (" and ".join(terms) or "true"), params


def query_parameter(name: str, value: Any, column: str = "") -> Any:
    """A typed BigQuery query parameter for a filter value."""
    from google.cloud import bigquery

    if value is None:
        raise ConfigError(f"filter on column '{column}': a value is required, got null")
    if isinstance(value, bool):
        kind = "BOOL"
    elif isinstance(value, int):
        kind = "INT64"
    elif isinstance(value, float):
        kind = "FLOAT64"
    elif isinstance(value, decimal.Decimal):
        kind = "NUMERIC"
    elif isinstance(value, dt.datetime):
        kind = "TIMESTAMP"
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)  # naive means UTC, as in the score tables
    elif isinstance(value, dt.date):
        kind = "DATE"
    elif isinstance(value, str):
        kind = "STRING"
    else:
        raise ConfigError(
            f"filter on column '{column}': unsupported value type {type(value).__name__}"
        )
    return bigquery.ScalarQueryParameter(name, kind, value)


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
