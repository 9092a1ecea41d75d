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
