from .configuration import LatentActionConfig
from .model import BaseStates, LatentActionModel, LatentActionOutput

__all__ = ["LatentActionConfig", "LatentActionModel", "LatentActionOutput", "BaseStates"]
