"""One module per stage group; each defines `register(app)` adding its typer commands."""
