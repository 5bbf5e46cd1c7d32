"""``rollway serve``: a drop-in replacement for ``tensorflow_model_server``.

Stages: flags -> model config -> manager (version lifecycle) -> servables ->
data plane (``inference``) -> thin gRPC adapters.
"""
