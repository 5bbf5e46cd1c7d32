"""rollway's rollout as a Knative function (``func build`` / ``func deploy`` work on
this directory; see README.md). The code is in ``function/func.py``;
``python -m functions.rollout_function`` serves it locally and in an image."""
