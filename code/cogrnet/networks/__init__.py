"""Networks and the factory that builds them from a checkpoint's config."""
from .vnet import VNet, build_network, network_config

__all__ = ["VNet", "build_network", "network_config"]
