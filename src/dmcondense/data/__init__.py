"""Data: data set specs, sources (torchvision, TinyImageNet, image folders, the built-in
MNIST sample) and the per-class DataModule."""
