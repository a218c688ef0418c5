"""Data: the dataset contract, transforms, samplers, phantoms and preprocessing."""
