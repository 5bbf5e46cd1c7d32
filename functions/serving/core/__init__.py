"""What is served, independent of TensorFlow and of any protocol: sources that
announce each model's aspired versions (the whole set, never deltas: the file
system ``source``, and ``assignments``), the ``manager`` that loads, serves and
unloads them with availability preserved, and ``serving_core`` (config,
manager and source together; reloads). The servable type is opaque here."""
