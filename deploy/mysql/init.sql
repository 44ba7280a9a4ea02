-- The seeds' init.sql, for Audio Alchemist: a database and the user the services connect as.
-- The schema itself comes from `alchemist migrate` (Alembic), not from this file.
-- Run as an administrator:  mysql -u root -p < deploy/mysql/init.sql
-- CHANGE THE PASSWORD below (this one is a placeholder, not a real secret).
CREATE DATABASE IF NOT EXISTS auth CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE USER IF NOT EXISTS 'auth_user'@'%' IDENTIFIED BY 'CHANGE-ME-example-only';
GRANT ALL PRIVILEGES ON auth.* TO 'auth_user'@'%';
FLUSH PRIVILEGES;
