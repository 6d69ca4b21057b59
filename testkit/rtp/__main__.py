"""``python -m testkit.rtp <spec-json>``: one plain-RTP publisher process."""

import sys

from testkit.rtp.send import main

sys.exit(main())
