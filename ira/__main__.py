import sys

from ira.cli.main import main

sys.exit(main())
