"""Dynamics Lab's engine: data, models, training, jobs, run store and the analyses.

Importing the package is cheap and pulls in no torch; import the submodule you need
(`from engine import data, models, train`).
"""
