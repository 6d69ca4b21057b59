"""``python -m testkit.whep <spec-json>``: one test WHEP server process."""

import sys

from testkit.whep.server import main

sys.exit(main())
