"""Condensation methods: one LightningModule each, on the shared base (base.py).

dm   Distribution Matching (Zhao & Bilen, WACV 2023): class-wise mean embeddings
"""
