"""``python -m diffzoo.cli ...`` (and ``accelerate launch -m diffzoo.cli train ...``): the ``diffzoo`` command."""

from diffzoo.cli import main

raise SystemExit(main())
