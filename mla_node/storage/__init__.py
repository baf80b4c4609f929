"""Storage: the one SQLite writer, its migrations and the queries of the use cases."""
