DROP TABLE migration_backups;
