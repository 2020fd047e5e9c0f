"""Entry points for a developer's machine (`make ui`, `make demo`), not wiring: nothing in the asset
graph imports them."""
