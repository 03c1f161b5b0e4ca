"""The data manifests (one YAML per dataset), installed as the package ``gazebench.data_manifests``."""
