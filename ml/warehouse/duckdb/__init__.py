"""DuckDB: the embedded warehouse (target `dev`). `backend.DuckDBWarehouse` implements the
protocol; `connection` opens the file, `read` and `write` hold the SQL, `sql` quotes it."""
