-- managed-migrate: allow=drop-column
ALTER TABLE accounts DROP COLUMN display_name;
