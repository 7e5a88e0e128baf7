"""Lightrail: deploy, verify, benchmark and migrate LLM inference patterns on Kubernetes."""

__version__ = "0.1.0"
