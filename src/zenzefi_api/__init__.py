"""Litestar REST API, access proxy and the `zenzefi` command line, thin over zenzefi_core."""
