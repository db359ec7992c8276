"""Generators: Self-Instruct, Bonito-style synthesis, Tree-Instruct, Evol-Instruct, backtranslation."""

from . import backtranslation, bonito, evol_instruct, self_instruct, tree_instruct  # noqa: F401
