"""What every warehouse backend provides: the `Warehouse` and `SliceWriter` protocols (and the
value-fault conditions each dialect spells its own way).

Services talk to these only; `ml.warehouse.connect` picks the implementation from the settings'
`warehouse.type`. Filters are column -> value mappings whose values reach SQL as bound
parameters, never as text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from ml.kinds import FLOAT32_MAX, INT_EXACT_MAX

if TYPE_CHECKING:
    import pyarrow as pa

Filters = Mapping[str, Any]
# column -> (value, Arrow type): columns with one value for a whole slice
Constants = Mapping[str, tuple[Any, Any]]


@dataclass(frozen=True)
class Relation:
    """A table or view as dbt names it: `database.schema.name` (database optional)."""

    database: str | None
    schema: str
    name: str

    def __str__(self) -> str:
        return ".".join(p for p in (self.database, self.schema, self.name) if p)


@dataclass(frozen=True)
class KeyStats:
    """Rows, null keys and distinct keys (None: not counted) of a filtered relation, computed
    in the warehouse."""

    rows: int
    nulls: dict[str, int]
    distinct: int | None

    @property
    def duplicates(self) -> int | None:
        return None if self.distinct is None else self.rows - self.distinct


# numeric feature -> fault -> rows: the values the contract refuses (ml.contract.VALUE_FAULTS)
ValueFaults = dict[str, dict[str, int]]


@dataclass(frozen=True)
class FaultSpelling:
    """How a dialect writes the tests `value_fault_conditions` needs."""

    float_type: str  # the 64-bit float type to cast to
    is_nan: str  # function names
    is_inf: str


def value_fault_conditions(
    kinds: Mapping[str, str], quote: Callable[[str], str], spelling: FaultSpelling
) -> list[tuple[str, str, str]]:
    """(feature, fault, SQL condition) per value `ml.contract.check_feature_values` refuses
    (the faults named as in `ml.contract.VALUE_FAULTS`), in one dialect's spelling. NaN and
    infinities are excluded from the range test explicitly: DuckDB orders NaN above every
    number, BigQuery compares it false."""
    out: list[tuple[str, str, str]] = []
    for name, kind in kinds.items():
        c = quote(name)
        if kind == "int":
            out.append((name, "int_range", f"({c} > {INT_EXACT_MAX} or {c} < -{INT_EXACT_MAX})"))
        elif kind in ("float", "decimal"):
            x = f"cast({c} as {spelling.float_type})"
            nan, inf = f"{spelling.is_nan}({x})", f"{spelling.is_inf}({x})"
            out += [
                (name, "nan", nan),
                (name, "inf", inf),
                (name, "float32_range", f"not {nan} and not {inf} and abs({x}) > {FLOAT32_MAX!r}"),
            ]
    return out


@dataclass(frozen=True)
class Population:
    """A filtered relation as a parenthesized SELECT in the backend's dialect, with its bound
    parameters in the backend's own form: what a compiled model scores inside the warehouse."""

    sql: str
    params: list[Any]


class SliceWriter(Protocol):
    """Replaces the rows of one slice (context + training run) of a score table atomically:
    readers see the old rows until the context exits cleanly, then the new ones, never a mix;
    an exception leaves the old rows."""

    rows: int

    def __enter__(self) -> SliceWriter: ...

    def write(self, batch: pa.Table | pa.RecordBatch) -> None: ...

    def write_query(self, query: str, params: list[Any], kinds: Mapping[str, str]) -> None:
        """The rows a SELECT returns (columns -> kinds, in order), written inside the
        warehouse (`INSERT ... SELECT`, `MERGE ... USING (SELECT ...)`): no row leaves it."""
        ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class Warehouse(Protocol):
    """A live connection to one warehouse."""

    def open(self) -> Warehouse:
        """Connect now rather than on first use (take the file lock, build the client)."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Warehouse: ...

    def __exit__(self, *exc: object) -> None: ...

    def present(self) -> bool:
        """Whether the warehouse itself is there, checked without connecting: False for a
        DuckDB file not created yet (by `ml demo-data` or `dbt build`), which `open` refuses
        unless the warehouse was connected with `create`."""
        ...

    def exists(self, relation: Relation) -> bool: ...

    def columns(self, relation: Relation) -> dict[str, str]:
        """Column name -> kind (ml.kinds), in table order."""
        ...

    def read_arrow(self, relation: Relation, columns: list[str], filters: Filters) -> pa.Table: ...

    def read_batches(
        self, relation: Relation, columns: list[str], filters: Filters, batch_size: int
    ) -> Iterator[pa.RecordBatch]: ...

    def key_stats(
        self, relation: Relation, keys: list[str], filters: Filters, *, distinct: bool = True
    ) -> KeyStats:
        """Rows and null keys of the filtered relation, and its distinct keys when asked."""
        ...

    @property
    def in_process(self) -> bool:
        """Whether the warehouse's queries run on this process's CPU (DuckDB): work the
        scoring stream already does is then not asked of it a second time."""
        ...

    def streaming(self) -> AbstractContextManager[None]:
        """Held while this process streams batches through a model (read_batches in, a slice
        writer out): the model's threads do the work, the warehouse's only feed them."""
        ...

    @property
    def dialect(self) -> str:
        """The SQL dialect compiled models are written in for this warehouse."""
        ...

    def population(self, relation: Relation, columns: list[str], filters: Filters) -> Population:
        """The filtered columns as a SELECT to build on (values bound, never pasted)."""
        ...

    def value_faults(
        self, relation: Relation, kinds: Mapping[str, str], filters: Filters
    ) -> ValueFaults:
        """Per numeric feature, the rows whose value the model would not take the same way as
        in training (NaN, infinite, beyond float32, an int beyond 2**53), counted in SQL."""
        ...

    def read_sample(
        self, relation: Relation, columns: list[str], filters: Filters, rows: int
    ) -> pa.Table:
        """About `rows` rows of the filtered relation, sampled by the warehouse (the same rows
        each time for the same data)."""
        ...

    def count_query_rows(self, sql: str, filters: Filters) -> int:
        """Rows a query returns, filtered (the compiled SQL of a dbt model, before building it)."""
        ...

    def slice_writer(
        self,
        schema: str,
        name: str,
        slice_: Filters,
        constants: Constants,
        *,
        current: bool = True,
    ) -> SliceWriter:
        """A writer replacing the rows of `<schema>.<name>` that match `slice_`; with `current`,
        `<name>__current` shows the slice written last per value of `slice_`'s keys other than
        run_id."""
        ...

    def replace_tables(self, schema: str, tables: Mapping[str, pa.Table]) -> None:
        """Create or replace whole tables (the raw demo data)."""
        ...
