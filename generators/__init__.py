"""Generators: Self-Instruct, Bonito-style synthesis, Tree-Instruct, Evol-Instruct, backtranslation,
WaveCoder (code), LIFT (expansion and curation), TEGIT (tasks from passages).

Each module registers its method when imported (through `instructkit.registry`, on demand)."""
