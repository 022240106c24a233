"""Project-wide test configuration.

tests/by_image/ holds the per-image smoke tests that `builder test` runs against a built image
(BUILDER_TEST_IMAGE); they are not part of the project's own suite and are only collected when
that variable is set.
"""

import os

collect_ignore_glob = [] if os.environ.get("BUILDER_TEST_IMAGE") else ["by_image/*"]
