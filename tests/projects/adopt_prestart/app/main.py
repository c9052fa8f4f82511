"""The application the prestart script starts (an ASGI app, served by uvicorn)."""


async def app(scope: dict[str, object], receive: object, send: object) -> None:
    """A placeholder ASGI application."""
