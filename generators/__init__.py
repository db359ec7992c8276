"""Generators: Self-Instruct, Bonito-style synthesis, Tree-Instruct, Evol-Instruct, backtranslation.

Each module registers its method when imported (through `instructkit.registry`, on demand)."""
