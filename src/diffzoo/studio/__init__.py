"""diffzoo studio: a local web app over the public API (a consumer: nothing imports it)."""
