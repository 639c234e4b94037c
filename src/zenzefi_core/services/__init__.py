"""Use cases: each call is one unit of work, and so one database transaction."""
