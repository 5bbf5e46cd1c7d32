"""TensorFlow Serving's APIs: PredictionService and ModelService over gRPC
(``grpc_api``), its REST API (``rest_api``), and the conversions between its
request/response protos and the data plane's types (``requests``, ``responses``)."""
