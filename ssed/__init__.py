"""ssed: a Server-Sent Events broadcast daemon in pure Python.

The public API for plugins is `Service` and `Refuse` (SPEC section 9).
"""
from .service import Refuse, Service

__all__ = ["Service", "Refuse"]
__version__ = "0.1.0"
