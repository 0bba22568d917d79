"""``python -m scripts.study_driver``: see the package's docstring."""

import sys

from scripts.study_driver.command import main

if __name__ == "__main__":
    sys.exit(main())
