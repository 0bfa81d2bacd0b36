"""Flows: YAML pipelines of executors (config), their DAG (graph) and the local runtime."""
