"""Protocol adapters. Each turns its wire format into data-plane calls and
renders the results; none touches a servable, the manager or a source
(import-linter: api may not import runtime or core). Errors from the one error
tree (loader.errors) are mapped once to gRPC (``grpc_errors``) and once to HTTP
(``http_errors``)."""
