"""crawljobs: a self-hosted asynchronous crawl-job system."""

__version__ = "0.1.0"
