"""The application (an ASGI app, served by uvicorn)."""


async def app(scope: dict[str, object], receive: object, send: object) -> None:
    """A placeholder ASGI application."""
