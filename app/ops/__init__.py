"""Operations commands of ``omi-backend``: one module per command (doctor, reindex, migrate).

Each module has ``register(commands)``, which adds its sub-command (with ``--help``) to the
CLI's parser, and an async function that does the work, called by tests directly.
"""
