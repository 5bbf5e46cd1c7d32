"""rollway's loader as a Knative function (``func build`` / ``func deploy`` work on
this directory; see README.md). The code is in ``function/func.py``;
``python -m functions.loader_function`` serves it locally and in the loader image."""
