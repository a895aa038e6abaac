"""`recycler serve`: an HTTP API and a web page over a durable queue of studies."""

from recycler.service.app import ServiceConfig, create_app

__all__ = ["ServiceConfig", "create_app"]
