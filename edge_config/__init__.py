"""The gateway's configuration: schema (`models`) and loading (`loader`)."""

from edge_config.errors import ConfigError
from edge_config.loader import load_config, read_password
from edge_config.models import GatewayConfig

__all__ = ["ConfigError", "GatewayConfig", "load_config", "read_password"]
