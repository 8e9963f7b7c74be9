"""compat: run unmodified nnsight scripts on mlxsight or on nnsight, and cross-check their values.

``python -m compat run --backend mlx|nnsight SCRIPT [ARGS...]`` runs a script as ``python SCRIPT``
would; ``crosscheck`` runs it on both backends (one process each: nnsight and mlx cannot share an
import order) and compares every saved value; ``check-remote`` builds nnsight's NDIF request offline.
Importing this package imports nothing heavy: the backend decides what gets imported first.
"""
