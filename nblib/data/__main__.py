"""``python -m nblib.data fetch-all`` (the Makefile's and the README's; ``fetch-tasks``: lesson 08's corpora):
fetch and verify the public corpora (:func:`nblib.data.corpora.main`)."""

from nblib.data.corpora import main

raise SystemExit(main())
