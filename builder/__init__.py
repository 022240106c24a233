"""Build system for ML inference container images: matrix.yaml -> Dockerfiles -> built, tested,
tagged and published images. Each pipeline stage lives in the module named after it."""

__version__ = "0.1.0"
