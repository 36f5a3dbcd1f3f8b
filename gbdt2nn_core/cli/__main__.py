import sys

from gbdt2nn_core.cli import main

sys.exit(main())
