"""Route handlers grouped by context; each handler parses, calls one core use case, renders."""
