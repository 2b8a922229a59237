"""Pipeline stages: pure functions from input shards to output shards (no Prefect in here)."""
