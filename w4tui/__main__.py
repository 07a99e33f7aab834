import sys

from w4tui.cli import main

sys.exit(main())
