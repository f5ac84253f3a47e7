"""Recipes: the TOML methods paragraphs, their typed specs and schedules."""
