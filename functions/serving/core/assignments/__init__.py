"""Serving what a store's assignments say (``--assignments``): read the
assignment documents (``store``), fetch the assigned versions verified into a
local cache, hand them to the core (``source``), and follow new generations by
polling or Kafka (``follow``)."""
