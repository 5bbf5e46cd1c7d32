"""The Knative function layout: func's scaffolding imports ``new`` from here."""

from .func import new

__all__ = ["new"]
