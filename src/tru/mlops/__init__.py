"""MLOps layer: DVC data versioning, MLflow tracking and registry, pipeline steps."""
