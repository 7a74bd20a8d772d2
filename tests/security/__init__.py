"""Hostile inputs: manifests, documents, requests and network peers that try to cross a boundary.

Run on its own with `pytest -q tests/security`. Each test names the item of issue 15 it holds.
"""
