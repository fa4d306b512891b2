"""robota: record, train, validate and ship robot policies for manufacturing.

This package stays light on import (no torch, no mujoco), so that `import robota.edge` on a
factory PC costs only numpy. Heavy modules load when their command or function is used.
"""

__version__ = "0.1.0"
