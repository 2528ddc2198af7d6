"""``stateless13.transports``: adapters that move stateless13's bytes over real transports
(memory, asyncio and blocking TCP, QUIC on aioquic) and the ``stateless13 serve`` command.

They build on the core's public API; the core never imports them.  In the repository this
folder is ``transports/``, linked as ``stateless13/transports`` (see pyproject.toml).
"""
