"""Experiment configs: ``base.py`` declares every field, ``validate.py`` checks them, one file per experiment."""
