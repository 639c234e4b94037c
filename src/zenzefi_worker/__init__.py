"""Dramatiq actors: outbox relay, email, webhook delivery and the scheduled scans."""
