import sys

from idmz.cli import main

sys.exit(main())
