"""Every warehouse table's schema, declared once.

Each stage group owns one module here; `TABLES` collects them. A shard written to a
table is conformed to its schema (column order and types) before it lands on disk.
"""
from __future__ import annotations

from warehouse.schemas.base import TableSpec
from warehouse.schemas import curate, ingest, llm, quality, recall

TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for module in (ingest, recall, llm, curate, quality)
    for spec in module.SPECS
}

__all__ = ["TABLES", "TableSpec"]
