"""Sampling with any schedule, metrics against exact targets, and plots."""
