"""Generators: Self-Instruct, Bonito-style synthesis, Tree-Instruct, Evol-Instruct, backtranslation."""

from . import bonito, self_instruct  # noqa: F401
