"""The TensorFlow runtime: loading a version (``loading``: a SavedModel into a
Session, ``session_bundle``, or ``model.tflite`` into interpreters, ``tflite``)
into a ``servable.Servable`` whose signatures run through one runner each;
server-side batching; the op libraries TF Serving links in."""
