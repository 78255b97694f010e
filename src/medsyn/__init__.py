"""medsyn: measure whether class-conditional GAN images help a small medical image classifier."""

__version__ = "0.1.0"
