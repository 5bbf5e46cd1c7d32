"""The baseline servers of ``bench_serving_compare``: each runs as its own process."""
