"""pcapvision: packet captures to images, and how far a CNN can be trusted on them."""

__version__ = "0.1.0"
