-- Records each backup taken before a migration run, so operators can find it.
CREATE TABLE migration_backups (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  path text NOT NULL,
  bytes bigint NOT NULL,
  taken_at timestamptz NOT NULL DEFAULT now()
);
