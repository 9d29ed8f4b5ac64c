"""``python -m aegis_proxy.cli``: the ``aegis-proxy`` command."""

from aegis_proxy.cli.main import main

raise SystemExit(main())
