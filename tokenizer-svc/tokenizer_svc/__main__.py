"""`python -m tokenizer_svc serve-tokenizer`: the service's entry point in its image."""

import sys

from tokenizer_svc.cli import main

sys.exit(main())
