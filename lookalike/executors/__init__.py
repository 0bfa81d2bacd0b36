"""Executors: the steps of a flow. Built-ins are referred to by name in flow YAML."""

from lookalike.executors.base import BUILTINS, Executor, ExecutorContext, requests

__all__ = ["BUILTINS", "Executor", "ExecutorContext", "requests"]
