"""Condensation methods: one LightningModule each, on the shared base (base.py).

dm   Distribution Matching (Zhao & Bilen, WACV 2023): class-wise mean embeddings (dm.py)
dc   gradient matching (Zhao, Mopuri, Bilen, ICLR 2021)          (gradient_matching.py)
dsa  DC with differentiable Siamese augmentation (Zhao, Bilen, ICML 2021)
"""
