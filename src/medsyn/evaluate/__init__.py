"""Evaluation: classification metrics, statistics, and the audit of synthetic data."""
