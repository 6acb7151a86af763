"""BigQuery: the production warehouse (target `prod`). `backend.BigQueryWarehouse` implements
the protocol; `connection` builds the clients, `read` and `write` hold the SQL, `sql` quotes it."""
