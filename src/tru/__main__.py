import sys

from tru.cli import main

sys.exit(main())
