"""The shape of a table declaration."""
from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl


@dataclass(frozen=True)
class TableSpec:
    name: str
    doc: str
    schema: dict[str, pl.DataType]
    key: tuple[str, ...] = ()
    # Manifest tables live under _manifest/<name>/ and are not fingerprinted.
    manifest: bool = False
    columns_doc: dict[str, str] = field(default_factory=dict)
    # Values of columns added after a table's first release, for writers that do not set them.
    defaults: dict[str, object] = field(default_factory=dict)
    # Tables retried in place (`attempt` column): the key of one retried unit. The table's view shows
    # a failed row only while no newer attempt of its unit exists; <name>_all shows every attempt.
    attempt_key: tuple[str, ...] = ()

    def empty(self) -> pl.DataFrame:
        return pl.DataFrame(schema=self.schema)

    def conform(self, df: pl.DataFrame) -> pl.DataFrame:
        """Select the declared columns in order and cast them; a missing column is an error."""
        df = df.with_columns(pl.lit(v, self.schema[c]).alias(c) for c, v in self.defaults.items() if c not in df.columns)
        missing = [c for c in self.schema if c not in df.columns]
        if missing:
            raise ValueError(f"table {self.name!r}: rows are missing columns {missing}")
        return df.select([pl.col(c).cast(t, strict=True) for c, t in self.schema.items()])
