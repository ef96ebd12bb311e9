"""``python -m smbring``: the ``smbring`` command."""
import sys

from smbring.cli import main

sys.exit(main())
