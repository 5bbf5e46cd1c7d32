"""The data plane: one :class:`DataPlane` (predict, classify, regress,
multi_inference, metadata, status, ready) over the manager's servables, with
protocol-neutral request and result types (``types``). Every API adapter calls
it and nothing below it; warmup replays through the same servable-level
operations before a version is AVAILABLE (``warmup``)."""
