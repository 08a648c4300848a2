"""A room-based game server and bot players. Run ``python -m examples.game --bots 20``."""
