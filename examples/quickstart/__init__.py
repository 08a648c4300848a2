"""Quickstart: a greeter with a unary and a server-streaming call. Run ``python -m examples.quickstart``."""
