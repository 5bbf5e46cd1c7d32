"""rollway's deployables: the TF Serving-compatible server and the CLI."""
