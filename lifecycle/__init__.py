"""lifecycle: the runtime shell of the pipeline (configuration, embedded stack, topics, CLI).

The pipeline itself lives in the sibling packages: ``schemas`` (event contracts and codec),
``streams`` (Faust processors and HTTP views) and ``connectors`` (downstream stores, emitter SDK).
"""

__version__ = "0.1.0"
