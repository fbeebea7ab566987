"""Peer pipelines for the throughput benchmark: the same four steps, built on other stacks."""
