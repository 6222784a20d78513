import sys

from qsmkit.cli.main import main

sys.exit(main())
