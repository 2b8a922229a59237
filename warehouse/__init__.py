"""Fingerprinted Parquet shards + a DuckDB catalog of views; see warehouse.store for the layout."""
from warehouse.fingerprint import content_hash, fingerprint
from warehouse.schemas import TABLES, TableSpec
from warehouse.store import StageRun, Warehouse, new_id, now_utc, resolve_data_dir

__all__ = ["TABLES", "TableSpec", "Warehouse", "StageRun", "fingerprint", "content_hash",
           "new_id", "now_utc", "resolve_data_dir"]
