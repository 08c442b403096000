-- Additive and online-safe: a nullable column with no default is a catalog change.
ALTER TABLE accounts ADD COLUMN display_name text;
