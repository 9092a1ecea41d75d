/* jobq_test--1.0.sql: C tasks for jobq's tests */

\echo Use "CREATE EXTENSION jobq_test" to load this file. \quit

-- insert payload->'value' into the table named by payload->>'table', by
-- SPI; returns {"inserted": <rows>}
CREATE FUNCTION @extschema@.spi_insert(payload jsonb)
RETURNS jsonb
LANGUAGE C STRICT
AS 'MODULE_PATHNAME', 'jobq_test_spi_insert';

-- insert the attempt number into the table named by payload->>'table',
-- then fail unless the attempt is payload->'succeed_at' or later; returns
-- {"attempt": <n>}
CREATE FUNCTION @extschema@.fail_until(payload jsonb)
RETURNS jsonb
LANGUAGE C STRICT
AS 'MODULE_PATHNAME', 'jobq_test_fail_until';

-- claim up to n due jobs with the claim a jobq worker makes, as if in
-- worker slot slot, and return their ids; they stay locked by the
-- caller's transaction (for isolation specs)
CREATE FUNCTION @extschema@.claim_as_worker(n integer, slot integer)
RETURNS SETOF bigint
LANGUAGE C STRICT
AS 'MODULE_PATHNAME', 'jobq_test_claim_as_worker';

-- after jobs claimed by claim_as_worker() were let go: make claims find
-- them again, as a worker does when it lets jobs go
CREATE FUNCTION @extschema@.floors_reset()
RETURNS void
LANGUAGE C
AS 'MODULE_PATHNAME', 'jobq_test_floors_reset';

-- put back the jobs of expired leases of external executors, as the
-- workers do, in the caller's transaction; returns how many
CREATE FUNCTION @extschema@.expire_leases()
RETURNS integer
LANGUAGE C
AS 'MODULE_PATHNAME', 'jobq_test_expire_leases';

-- the external executors' claim floors: valid or not, and per priority
-- level the key (run_at, id) where claims start
CREATE FUNCTION @extschema@.executor_floors(OUT valid boolean, OUT priority smallint,
                                            OUT run_at timestamptz, OUT id bigint)
RETURNS SETOF record
LANGUAGE C
AS 'MODULE_PATHNAME', 'jobq_test_executor_floors';
