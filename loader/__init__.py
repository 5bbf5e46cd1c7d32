"""rollway's model-version lifecycle library.

Everything here is independent of how it is deployed: version discovery and
policy, model configuration, and the error tree shared by every rollway
component. ``functions`` imports ``loader``; ``loader`` never imports
``functions``.
"""
