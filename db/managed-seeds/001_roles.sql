INSERT INTO roles (name, description) VALUES
  ('admin', 'Full access'),
  ('member', 'Regular user')
ON CONFLICT (name) DO UPDATE SET description = excluded.description;
