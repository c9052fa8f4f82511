"""A stand-in application whose settings module owns the database URL."""
