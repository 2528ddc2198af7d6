"""Adapters that move stateless13's bytes over real transports, using its public API only."""
