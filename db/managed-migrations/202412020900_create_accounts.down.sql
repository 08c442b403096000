DROP TABLE roles;
DROP TABLE accounts;
