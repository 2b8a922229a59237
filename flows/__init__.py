"""Prefect flows: the DAG. Each flow maps shard-sized tasks over a stage from `tasks/`."""
