"""Alembic revision scripts of the alert store."""
