-- One database and one login role per service, so no service can read
-- another's data (the design's "private state"). The postgres image runs
-- this once, as the superuser, when its data directory is first created
-- (psql -v ON_ERROR_STOP=1, one statement per transaction, which
-- CREATE DATABASE needs).
--
-- Each role owns its database, so its migrations can create tables in the
-- `public` schema (PostgreSQL 15 no longer lets PUBLIC create there; the
-- database owner can). CONNECT is revoked from PUBLIC and granted to the
-- owner only: a role that tries to open another service's database gets
-- "permission denied for database". The passwords are for this local
-- compose set-up only and appear again in the services' DATABASE_URL in
-- deploy/docker-compose.yml; tests/tests/compose.rs checks both agree.

CREATE ROLE order_svc LOGIN PASSWORD 'order_pw';
CREATE ROLE inventory_svc LOGIN PASSWORD 'inventory_pw';
CREATE ROLE payment_svc LOGIN PASSWORD 'payment_pw';
CREATE ROLE courier_svc LOGIN PASSWORD 'courier_pw';
CREATE ROLE communication_svc LOGIN PASSWORD 'communication_pw';

CREATE DATABASE choreo_order OWNER order_svc;
CREATE DATABASE choreo_inventory OWNER inventory_svc;
CREATE DATABASE choreo_payment OWNER payment_svc;
CREATE DATABASE choreo_courier OWNER courier_svc;
CREATE DATABASE choreo_communication OWNER communication_svc;

REVOKE ALL ON DATABASE choreo_order FROM PUBLIC;
REVOKE ALL ON DATABASE choreo_inventory FROM PUBLIC;
REVOKE ALL ON DATABASE choreo_payment FROM PUBLIC;
REVOKE ALL ON DATABASE choreo_courier FROM PUBLIC;
REVOKE ALL ON DATABASE choreo_communication FROM PUBLIC;

GRANT CONNECT, TEMPORARY ON DATABASE choreo_order TO order_svc;
GRANT CONNECT, TEMPORARY ON DATABASE choreo_inventory TO inventory_svc;
GRANT CONNECT, TEMPORARY ON DATABASE choreo_payment TO payment_svc;
GRANT CONNECT, TEMPORARY ON DATABASE choreo_courier TO courier_svc;
GRANT CONNECT, TEMPORARY ON DATABASE choreo_communication TO communication_svc;
