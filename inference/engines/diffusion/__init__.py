"""Engines on real diffusion models loaded from a local folder in diffusers layout.

Importing this package pulls in torch only; `diffusers` and `transformers` are imported when an
engine is built (`common.load_folder`), so the server and the other engines never pay for them.
"""
