"""imd's own JSON API over HTTP: log in and out, health and metrics."""
