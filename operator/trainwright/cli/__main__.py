import sys

from trainwright.cli import main

sys.exit(main())
