import sys

from mooseng.cli import main

sys.exit(main())
