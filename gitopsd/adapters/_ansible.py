"""ansible-core's Python API, for gitopsd.adapters.inventory's sandboxed child only (never the daemon).

ansible-core 2.19's documented-as-internal modules are needed for two things the public API does
not offer: capturing warnings (the only place a parse failure's reason ends up) and formatting them.
"""

from ansible._internal._display_utils import DeferredWarningContext, format_message
from ansible.errors import AnsibleError
from ansible.inventory.manager import InventoryManager
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import init_plugin_loader
from ansible.template import Templar
from ansible.utils.collection_loader import AnsibleCollectionConfig
from ansible.vars.manager import VariableManager
from ansible.vars.reserved import is_reserved_name

__all__ = [
    "AnsibleCollectionConfig",
    "AnsibleError",
    "DataLoader",
    "DeferredWarningContext",
    "InventoryManager",
    "Templar",
    "VariableManager",
    "format_message",
    "init_plugin_loader",
    "is_reserved_name",
]
