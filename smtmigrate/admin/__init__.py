"""Administrative workflows on a database server: creating and dropping a store's database
and role, building Sumatra's widened schema in a new one. One module per vendor
(`postgresql.py`: `Admin` from the maintenance database; `mariadb.py`: a server connection,
no transactional DDL), above the engines and the library they call; the commands
(createdb, drop-recreate) and move call them."""
