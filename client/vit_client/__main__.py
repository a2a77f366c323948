import sys

from vit_client.cli import main

sys.exit(main())
