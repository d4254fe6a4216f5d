# ml_collections.config_flags: absl flag definitions; their values are ConfigDicts (`Any`).
from typing import Any

def __getattr__(name: str) -> Any: ...
