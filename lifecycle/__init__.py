"""lifecycle: the one installed package of the pipeline.

Its layers (README, "Layout"): ``lifecycle.core`` (the ground), ``lifecycle.schemas`` (event
contracts and codec), ``lifecycle.streams`` (the worker: intake, processors, erasure, HTTP) and
``lifecycle.connectors`` (downstream stores, emitter SDK), then the shell, the rest of this folder
(CLI, supervisor, embedded servers). The three middle ones are links to the checkout's top-level
``schemas/``, ``streams/`` and ``connectors/``. Nothing is imported here, so that importing a lower
layer never runs the shell.
"""

__version__ = "0.1.0"
