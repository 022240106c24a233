"""Generate: the files made from the matrix and committed — each image's lock (:mod:`.lock` reads
it, :mod:`.python_resolver` checks and makes it with uv), its build context and Dockerfile (:mod:`.render`)
and the bake file (:mod:`.bake`). Takes the matrix's image specs; gives ``images/`` and
``docker-bake.json``. Pure and offline, but for ``builder lock``, which needs the package index."""
