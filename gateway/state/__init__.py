"""Load state shared by the router: in-process by default (Redis when configured)."""
