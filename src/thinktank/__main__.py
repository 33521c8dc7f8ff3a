import sys

from thinktank.cli import main

sys.exit(main())
