"""Tabletop simulator, scripted expert, demo data and training, closed-loop evaluation."""
