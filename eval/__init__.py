"""Evaluation libraries: sampling for evaluation, metrics (toy, Frechet/KID, likelihood, classifier, Inception), tables and plots."""
