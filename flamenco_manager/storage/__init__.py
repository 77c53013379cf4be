"""Everything SQL: the schema, the database handle and the queries the services use."""
