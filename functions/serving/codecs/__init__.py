"""Conversions between wire formats and numpy: TensorProto (``tensors``), TF
Serving's REST JSON (``json_*``), tf.Example inputs (``examples``). A codec is
handed the signature's types (``specs.TensorSpec``), never a servable, and
imports no transport. Decoding validates before it allocates."""
