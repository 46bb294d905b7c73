import sys

from fleetlearn.cli import main

sys.exit(main())
