"""Generate: the files made from the matrix and committed — each image's lock (:mod:`.lock` reads
it, :mod:`.python_resolver` checks and makes it with uv), its Debian package lock (:mod:`.apt_lock`,
made by :mod:`.apt_resolver` in a container of the image's base), its base's lock
(:mod:`.base_lock`, made by :mod:`.base_resolver` from a bootstrap), its build context and
Dockerfile (:mod:`.render`) and the bake file (:mod:`.bake`); and what is behind them
(:mod:`.outdated`). Takes the matrix's image specs; gives ``images/``, ``bases/`` and
``docker-bake.json``. Rendering and the checks are offline; ``builder lock``, ``refresh`` and
``outdated`` need the package index, the Debian mirror and, for the apt and base locks, the Engine."""
