"""A live-broadcast channel: one publisher, many viewers on a topic. Run ``python -m examples.live``."""
