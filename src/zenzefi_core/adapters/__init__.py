"""Adapters behind the core's ports: in-memory (`memory`) and SQLAlchemy (`sqlalchemy`)."""
