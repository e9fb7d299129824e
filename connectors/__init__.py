"""The edges of the pipeline: the upstream emitter SDK, and (to come) the downstream store sinks."""
