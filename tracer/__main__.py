import sys

from tracer.cli.entry import main

sys.exit(main())
