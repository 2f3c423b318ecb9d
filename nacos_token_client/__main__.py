"""``python -m nacos_token_client …`` is the ``nacos-token`` command."""

import sys

from .cli import main

sys.exit(main())
