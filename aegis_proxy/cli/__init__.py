"""The ``aegis-proxy`` command line: each subcommand parses, calls the library, prints.

``python -m aegis_proxy.cli`` runs it too.
"""

from aegis_proxy.cli.main import main

__all__ = ["main"]
