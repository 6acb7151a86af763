"""The BigQuery side of the warehouse: clients, Arrow reads, load jobs and atomic slice writes.

ibis compiles filter values into the SQL text, so reads here build their own SQL with quoted
identifiers and typed query parameters (`ScalarQueryParameter`), never pasted values. Tables are
read through the Storage Read API in Arrow when it is available, and through REST pages
otherwise. Writes never stream: rows go to a local Parquet file, one load job puts it into a
staging table, and one MERGE replaces the slice, so rows appear all at once or not at all.
Every call carries the configured timeout, so a missing endpoint fails instead of hanging.
"""

from __future__ import annotations

import datetime as dt
import decimal
import ipaddress
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from ml.config import BigQuerySettings
from ml.errors import ConfigError, WarehouseError, one_line

if TYPE_CHECKING:
    import pyarrow as pa

    from ml.dbt import Relation

# BigQuery column type -> the logical kinds the contract checks compare (see ml.warehouse.KINDS).
_KIND = {
    "INTEGER": "int",
    "INT64": "int",
    "FLOAT": "float",
    "FLOAT64": "float",
    "NUMERIC": "decimal",
    "BIGNUMERIC": "decimal",
    "STRING": "string",
    "BOOLEAN": "bool",
    "BOOL": "bool",
    "DATE": "date",
    "TIMESTAMP": "timestamp",
    "DATETIME": "timestamp",
}
STAGING_TTL = dt.timedelta(hours=6)  # a staging table left by a killed process expires by itself


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

    # -- metadata ----------------------------------------------------------------------------
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

    def columns(self, relation: Relation) -> dict[str, str]:
        from google.api_core.exceptions import NotFound

        try:
            table = self.get_table(self.table_id(relation))
        except NotFound:
            raise WarehouseError(f"relation {relation} does not exist") from None
        except Exception as exc:  # noqa: BLE001
            raise WarehouseError(f"BigQuery: cannot look up {relation} ({one_line(exc)})") from None
        return {f.name: _KIND.get(f.field_type.upper(), f.field_type.lower()) for f in table.schema}

    # -- reading -----------------------------------------------------------------------------
    def _query(self, sql: str, params: list[Any]) -> Any:
        from google.cloud import bigquery

        config = bigquery.QueryJobConfig(query_parameters=params, use_legacy_sql=False)
        job = self.client.query(sql, job_config=config, retry=self.retry, timeout=self.timeout)
        job.result(retry=self.retry, timeout=self.timeout)
        return job

    def _select(
        self, relation: Relation, columns: list[str], filters: Mapping[str, Any]
    ) -> tuple[str, list[Any]]:
        where, params = _where(filters, "f")
        cols = ", ".join(_quote(c) for c in columns)
        return f"select {cols} from {_table_ref(self.table_id(relation))} where {where}", params

    def read_batches(
        self,
        relation: Relation,
        columns: list[str],
        filters: Mapping[str, Any],
        batch_size: int,
    ) -> Iterator[pa.RecordBatch]:
        """The filtered columns in Arrow batches: a plain table read when there is no filter,
        else a parameterized query whose result table is read the same way."""
        try:
            if filters:
                job = self._query(*self._select(relation, columns, filters))
                dest = job.destination
                source = f"{dest.project}.{dest.dataset_id}.{dest.table_id}"
                yield from self._read_table(source, None, columns, batch_size, job)
            else:
                yield from self._read_table(self.table_id(relation), columns, columns, batch_size)
        except WarehouseError:
            raise
        except Exception as exc:  # noqa: BLE001 - google.api_core and grpc errors
            raise WarehouseError(f"reading {relation} failed: {one_line(exc)}") from None

    def read_arrow(
        self, relation: Relation, columns: list[str], filters: Mapping[str, Any]
    ) -> pa.Table:
        import pyarrow as pa

        batches = list(self.read_batches(relation, columns, filters, 100_000))
        if batches:
            return pa.Table.from_batches(batches)
        schema = self.get_table(self.table_id(relation)).schema
        by_name = {f.name: f for f in schema}
        return pa.schema([pa.field(c, _arrow_type(by_name[c])) for c in columns]).empty_table()

    def _read_table(
        self,
        table_id: str,
        fields: list[str] | None,
        columns: list[str],
        batch_size: int,
        job: Any = None,
    ) -> Iterator[pa.RecordBatch]:
        """A table (or a query's result table) through the Storage Read API, else REST pages."""
        storage = self.storage()
        if storage is not None:
            stream = self._storage_batches(storage, table_id, fields)
            try:
                first = next(stream, None)
            except _api_errors():  # e.g. an emulator that serves tables but not query results
                first, stream = None, None  # nothing was yielded yet: REST reads it whole
            if stream is not None:
                if first is not None:
                    yield first.select(columns)
                    for batch in stream:
                        yield batch.select(columns)
                return
        if job is not None:  # a query's result: its pages, as the job serves them
            rows = job.result(page_size=batch_size, retry=self.retry, timeout=self.timeout)
        else:
            by_name = {f.name: f for f in self.get_table(table_id).schema}
            rows = self.client.list_rows(
                table_id,
                selected_fields=[by_name[c] for c in fields or columns],
                page_size=batch_size,
                retry=self.retry,
                timeout=self.timeout,
            )
        for batch in rows.to_arrow_iterable(bqstorage_client=None):
            if batch.num_rows:  # REST may serve empty pages; the model wants rows
                yield batch.select(columns)

    def _storage_batches(
        self, storage: Any, table_id: str, fields: list[str] | None
    ) -> Iterator[pa.RecordBatch]:
        from google.cloud.bigquery_storage_v1 import types

        project, dataset, table = table_id.split(".")
        options = types.ReadSession.TableReadOptions(selected_fields=fields or [])
        session = storage.create_read_session(
            parent=f"projects/{self.project}",
            read_session=types.ReadSession(
                table=f"projects/{project}/datasets/{dataset}/tables/{table}",
                data_format=types.DataFormat.ARROW,
                read_options=options,
            ),
            max_stream_count=1,  # one ordered stream: memory stays at one page
            timeout=self.timeout,
        )
        for stream in session.streams:
            reader = storage.read_rows(stream.name, timeout=self.timeout)
            for page in reader.rows(session).pages:
                batch = page.to_arrow()  # one RecordBatch per page
                if batch.num_rows:
                    yield batch

    def key_stats(
        self, relation: Relation, keys: list[str], filters: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Rows, null keys and distinct keys of a filtered relation, computed in BigQuery."""
        where, params = _where(filters, "f")
        key_cols = ", ".join(_quote(k) for k in keys)
        nulls = ", ".join(
            f"(select countif({_quote(k)} is null) from population) as nulls_{i}"
            for i, k in enumerate(keys)
        )
        sql = (
            f"with population as (select {key_cols} from {_table_ref(self.table_id(relation))} where {where}), "
            f"distinct_keys as (select distinct {key_cols} from population) "
            f"select (select count(*) from population) as n_rows, "
            f"(select count(*) from distinct_keys) as n_distinct"
            f"{', ' if nulls else ''}{nulls}"
        )
        try:
            job = self._query(sql, params)
            row = next(iter(job.result(retry=self.retry, timeout=self.timeout)))
        except Exception as exc:  # noqa: BLE001
            raise WarehouseError(f"reading {relation} failed: {one_line(exc)}") from None
        return {
            "rows": int(row["n_rows"] or 0),
            "nulls": {k: int(row[f"nulls_{i}"] or 0) for i, k in enumerate(keys)},
            "distinct": int(row["n_distinct"] or 0),
        }

    # -- writing -----------------------------------------------------------------------------
    def ensure_dataset(self, dataset: str) -> None:
        from google.cloud import bigquery

        ref = bigquery.Dataset(f"{self.project}.{_ident(dataset)}")
        ref.location = self.settings.location
        self.client.create_dataset(ref, exists_ok=True, retry=self.retry, timeout=self.timeout)

    def load_parquet(
        self, path: Path, table_id: str, schema: list[Any], write_disposition: str
    ) -> int:
        """One load job of a local Parquet file; returns the rows it loaded."""
        from google.cloud import bigquery

        config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET,
            schema=schema,
            write_disposition=write_disposition,
            create_disposition=bigquery.CreateDisposition.CREATE_IF_NEEDED,
        )
        with open(path, "rb") as handle:
            job = self.client.load_table_from_file(
                handle, table_id, job_config=config, timeout=self.timeout
            )
        job.result(retry=self.retry, timeout=self.timeout)
        return int(job.output_rows or 0)

    def replace_tables(self, dataset: str, tables: Mapping[str, pa.Table]) -> None:
        """Create or replace whole tables, one load job each (WRITE_TRUNCATE is atomic per table)."""
        import pyarrow.parquet as pq

        try:
            self.ensure_dataset(dataset)
            with tempfile.TemporaryDirectory(prefix="ml-bq-") as tmp:
                for name, table in tables.items():
                    table = _bigquery_ready(table)
                    path = Path(tmp) / f"{_ident(name)}.parquet"
                    pq.write_table(table, path)
                    schema = _bigquery_schema(table.schema)
                    self.load_parquet(
                        path, f"{self.project}.{dataset}.{name}", schema, "WRITE_TRUNCATE"
                    )
                    path.unlink()
        except (ConfigError, WarehouseError):
            raise
        except Exception as exc:  # noqa: BLE001
            raise WarehouseError(f"writing to dataset {dataset} failed: {one_line(exc)}") from None

    def slice_writer(
        self,
        dataset: str,
        name: str,
        slice_: Mapping[str, Any],
        constants: Mapping[str, tuple[Any, Any]],
    ) -> BigQuerySliceWriter:
        return BigQuerySliceWriter(self, dataset, name, slice_, constants)


class BigQuerySliceWriter:
    """Replaces one slice of a score table (rows matching `slice`) in one MERGE statement.

    Batches go to a local Parquet file as they come (memory stays at one batch); on a clean exit
    one load job puts the file into a staging table that expires by itself, one MERGE deletes
    the slice's old rows and inserts the new ones atomically, and the staging table is dropped.
    An exception before that leaves BigQuery untouched.
    """

    def __init__(
        self,
        bq: BigQuery,
        dataset: str,
        name: str,
        slice_: Mapping[str, Any],
        constants: Mapping[str, tuple[Any, Any]],
    ) -> None:
        self.bq, self.dataset, self.name = bq, _ident(dataset), _ident(name)
        self.slice, self.constants = dict(slice_), dict(constants)
        self.table_id = f"{bq.project}.{self.dataset}.{self.name}"
        self.rows = 0
        self._tmp: str | None = None
        self._writer: Any = None
        self._schema: Any = None

    def __enter__(self) -> BigQuerySliceWriter:
        self._tmp = tempfile.mkdtemp(prefix="ml-bq-scores-")
        return self

    def write(self, batch: pa.RecordBatch) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        n = batch.num_rows
        columns = [*batch.columns]
        names = [*batch.schema.names]
        for column, (value, arrow_type) in self.constants.items():
            columns.append(pa.array([value] * n, type=arrow_type))
            names.append(column)
        table = _bigquery_ready(pa.Table.from_arrays(columns, names=names))
        if self._writer is None:
            assert self._tmp is not None
            self._schema = table.schema
            self._writer = pq.ParquetWriter(Path(self._tmp) / "scores.parquet", table.schema)
        self._writer.write_table(table.cast(self._schema))
        self.rows += n

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
            if exc_type is None and self._writer is not None:
                self._publish(Path(self._tmp or ".") / "scores.parquet")
        finally:
            if self._tmp:
                shutil.rmtree(self._tmp, ignore_errors=True)

    def _publish(self, path: Path) -> None:
        from google.cloud import bigquery

        bq = self.bq
        schema = _bigquery_schema(self._schema)
        names = [f.name for f in schema]
        staging = f"{bq.project}.{self.dataset}._ml_staging_{self.name}_{uuid.uuid4().hex[:12]}"
        try:
            bq.ensure_dataset(self.dataset)
            target = bigquery.Table(self.table_id, schema=schema)
            existing = bq.client.create_table(
                target, exists_ok=True, retry=bq.retry, timeout=bq.timeout
            )
            if {f.name for f in existing.schema} != set(names):
                raise WarehouseError(
                    f"{self.dataset}.{self.name}: existing columns ({', '.join(f.name for f in existing.schema)}) "
                    f"differ from the scores ({', '.join(names)}); drop or rename the old table"
                )
            stage = bigquery.Table(staging, schema=schema)
            stage.expires = dt.datetime.now(dt.UTC) + STAGING_TTL
            bq.client.create_table(stage, retry=bq.retry, timeout=bq.timeout)
            try:
                loaded = bq.load_parquet(path, staging, schema, "WRITE_APPEND")
                if loaded != self.rows:
                    raise WarehouseError(
                        f"{self.dataset}.{self.name}: the load job staged {loaded} rows, expected "
                        f"{self.rows}; nothing was replaced"
                    )
                bq._query(*self._merge(staging, names))
            finally:
                bq.client.delete_table(
                    staging, not_found_ok=True, retry=bq.retry, timeout=bq.timeout
                )
        except WarehouseError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise WarehouseError(
                f"writing {self.dataset}.{self.name} failed: {one_line(exc)}; the previous scores are unchanged"
            ) from None

    def _merge(self, staging: str, names: list[str]) -> tuple[str, list[Any]]:
        """ON FALSE matches nothing: the slice's old rows are 'not matched by source' and go,
        every staged row is 'not matched by target' and goes in; one statement, one commit."""
        where, params = _where(self.slice, "s", alias="target")
        cols = ", ".join(_quote(c) for c in names)
        values = ", ".join(f"incoming.{_quote(c)}" for c in names)
        sql = (
            f"merge into {_table_ref(self.table_id)} as target "
            f"using {_table_ref(staging)} as incoming on false "
            f"when not matched by source and {where} then delete "
            f"when not matched by target then insert ({cols}) values ({values})"
        )
        return sql, params


def _api_errors() -> tuple[type[BaseException], ...]:
    """What a refused or unsupported Storage Read API call raises (not programming errors)."""
    import grpc
    from google.api_core.exceptions import GoogleAPIError

    return (GoogleAPIError, grpc.RpcError)


# -- SQL building: identifiers quoted and validated, values always as typed parameters ---------
def _ident(name: str) -> str:
    if not name or any(ch in name for ch in "`\\\n\r\x00"):
        raise ConfigError(f"invalid BigQuery identifier {name!r}")
    return name


def _quote(name: str) -> str:
    return f"`{_ident(name)}`"


def _table_ref(table_id: str) -> str:
    return ".".join(_quote(part) for part in table_id.split("."))


def _where(filters: Mapping[str, Any], prefix: str, alias: str | None = None) -> tuple[str, list]:
    terms, params = [], []
    for i, (column, value) in enumerate(filters.items()):
        name = f"{prefix}{i}"
        col = f"{alias}.{_quote(column)}" if alias else _quote(column)
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


# -- Arrow <-> BigQuery types ----------------------------------------------------------------
def _bigquery_ready(table: pa.Table) -> pa.Table:
    """Naive timestamps are UTC (as on DuckDB): mark them so, which BigQuery loads as TIMESTAMP."""
    import pyarrow as pa

    fields = [
        pa.field(f.name, pa.timestamp("us", tz="UTC")) if pa.types.is_timestamp(f.type) else f
        for f in table.schema
    ]
    return table.cast(pa.schema(fields))


def _bigquery_schema(schema: pa.Schema) -> list[Any]:
    import pyarrow as pa
    from google.cloud import bigquery

    out = []
    for f in schema:
        t = f.type
        if pa.types.is_boolean(t):
            kind = "BOOL"
        elif pa.types.is_integer(t):
            kind = "INT64"
        elif pa.types.is_floating(t):
            kind = "FLOAT64"
        elif pa.types.is_decimal(t):
            kind = "NUMERIC" if t.precision <= 38 and t.scale <= 9 else "BIGNUMERIC"
        elif pa.types.is_string(t) or pa.types.is_large_string(t):
            kind = "STRING"
        elif pa.types.is_date(t):
            kind = "DATE"
        elif pa.types.is_timestamp(t):
            kind = "TIMESTAMP"
        else:
            raise WarehouseError(f"column '{f.name}': Arrow type {t} has no BigQuery mapping")
        out.append(bigquery.SchemaField(f.name, kind))
    return out


def _arrow_type(field: Any) -> Any:
    import pyarrow as pa

    return {
        "int": pa.int64(),
        "float": pa.float64(),
        "string": pa.string(),
        "bool": pa.bool_(),
        "date": pa.date32(),
        "timestamp": pa.timestamp("us", tz="UTC"),
        "decimal": pa.decimal128(38, 9),
    }.get(_KIND.get(field.field_type.upper(), ""), pa.string())


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
