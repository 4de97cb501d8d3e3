import sys

from instaseg.cli import main

sys.exit(main())
