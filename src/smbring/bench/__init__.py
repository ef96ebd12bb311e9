"""Benchmarks (``smbring bench NAME``): each compares side by side, in one run."""
