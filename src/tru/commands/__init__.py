"""Sub-commands of the ``tru`` CLI, one module per group; each exposes ``register(subparsers)``."""
