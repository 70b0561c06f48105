"""`python -m bolna_api` is the `bolna-api` command."""

from bolna_api.cli import main

raise SystemExit(main())
