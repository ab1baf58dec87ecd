"""gitopsd: environment branches of a bare Git repository drive Ansible deployments."""
__version__ = "0.1.0"
