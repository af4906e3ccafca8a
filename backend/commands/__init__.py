"""Sub-commands of `joker-head`, one module each, each with ``register(subparsers)``."""
