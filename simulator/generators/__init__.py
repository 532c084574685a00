"""Workload generators that write trace format v1."""
