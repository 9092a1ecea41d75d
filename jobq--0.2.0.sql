/* jobq--0.2.0.sql: install script */

\echo Use "CREATE EXTENSION jobq" to load this file. \quit

-- The control file names pg_catalog as the extension's schema so that
-- schema jobq is created here, as a member of the extension: DROP
-- EXTENSION removes it and pg_dump does not dump it on its own.
CREATE SCHEMA jobq;
COMMENT ON SCHEMA jobq IS 'jobq: durable job queue; grant USAGE to the roles that may use it';
REVOKE ALL ON SCHEMA jobq FROM PUBLIC;

/*
 * Types
 */
CREATE TYPE jobq.job_state AS ENUM
    ('pending', 'running', 'succeeded', 'failed', 'cancelled');
COMMENT ON TYPE jobq.job_state IS 'life cycle of a job: pending, running, then succeeded, failed or cancelled';

/*
 * Storage.  jobq.job holds unfinished jobs only; finished jobs move to
 * jobq.job_history, which jobq.retention prunes.  Both share one id
 * sequence.  Users never write these tables: the API does, as their owner.
 */
CREATE SEQUENCE jobq.job_id_seq AS bigint;

-- A job being run stays 'pending' here: its claim is a row lock held by
-- the transaction that runs it.  'running' (and worker_pid) are left by
-- version 0.1.0 only; jobq.jobs shows running jobs from jobq.running_jobs().
CREATE TABLE jobq.job (
    id            bigint NOT NULL DEFAULT pg_catalog.nextval('jobq.job_id_seq') PRIMARY KEY,
    queue         text NOT NULL DEFAULT 'default',
    state         jobq.job_state NOT NULL DEFAULT 'pending'
                  CHECK (state IN ('pending', 'running')),
    priority      smallint NOT NULL DEFAULT 0,
    run_at        timestamptz NOT NULL DEFAULT pg_catalog.now(),
    attempts      integer NOT NULL DEFAULT 0,
    max_attempts  integer NOT NULL,
    timeout       interval,
    owner         regrole NOT NULL,
    command       text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    started_at    timestamptz,
    worker_pid    integer,
    last_error    text,
    last_sqlstate text
) WITH (fillfactor = 80);
ALTER SEQUENCE jobq.job_id_seq OWNED BY jobq.job.id;

-- the claim: due pending jobs by priority, then run_at, then id
CREATE INDEX job_claim_idx ON jobq.job (priority DESC, run_at, id)
    WHERE state = 'pending';

COMMENT ON TABLE jobq.job IS 'unfinished jobs (pending and running); written only by the jobq API and workers';

CREATE TABLE jobq.job_history (
    id            bigint NOT NULL PRIMARY KEY,
    queue         text NOT NULL,
    state         jobq.job_state NOT NULL
                  CHECK (state IN ('succeeded', 'failed', 'cancelled')),
    priority      smallint NOT NULL,
    run_at        timestamptz NOT NULL,
    attempts      integer NOT NULL,
    max_attempts  integer NOT NULL,
    timeout       interval,
    owner         regrole NOT NULL,
    command       text NOT NULL,
    created_at    timestamptz NOT NULL,
    started_at    timestamptz,
    finished_at   timestamptz NOT NULL,
    result        jsonb,
    last_error    text,
    last_sqlstate text,
    worker_pid    integer
);
CREATE INDEX job_history_finished_idx ON jobq.job_history (finished_at);

COMMENT ON TABLE jobq.job_history IS 'finished jobs, kept for jobq.retention; written only by jobq workers';

-- pg_dump keeps queued and finished jobs
SELECT pg_catalog.pg_extension_config_dump('jobq.job', '');
SELECT pg_catalog.pg_extension_config_dump('jobq.job_history', '');
SELECT pg_catalog.pg_extension_config_dump('jobq.job_id_seq', '');

/*
 * Row-level security: a role sees its own jobs; superusers (who bypass
 * RLS) and members of pg_monitor see all.  There are no write policies and
 * no write privileges: only the API writes.
 */
REVOKE ALL ON jobq.job, jobq.job_history, jobq.job_id_seq FROM PUBLIC;
GRANT SELECT ON jobq.job, jobq.job_history TO PUBLIC;

ALTER TABLE jobq.job ENABLE ROW LEVEL SECURITY;
ALTER TABLE jobq.job_history ENABLE ROW LEVEL SECURITY;

CREATE POLICY job_owner_read ON jobq.job FOR SELECT
    USING (owner::pg_catalog.oid OPERATOR(pg_catalog.=)
               (SELECT r.oid FROM pg_catalog.pg_roles r
                 WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER)
           OR pg_catalog.pg_has_role('pg_monitor', 'USAGE'));
CREATE POLICY job_history_owner_read ON jobq.job_history FOR SELECT
    USING (owner::pg_catalog.oid OPERATOR(pg_catalog.=)
               (SELECT r.oid FROM pg_catalog.pg_roles r
                 WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER)
           OR pg_catalog.pg_has_role('pg_monitor', 'USAGE'));

/*
 * Status of a job, as jobq.status() and jobq.jobs show it.
 */
CREATE TYPE jobq.job_status AS (
    id            bigint,
    queue         text,
    state         jobq.job_state,
    priority      smallint,
    attempts      integer,
    max_attempts  integer,
    run_at        timestamptz,
    created_at    timestamptz,
    started_at    timestamptz,
    finished_at   timestamptz,
    result        jsonb,
    last_error    text,
    last_sqlstate text,
    worker_pid    integer,
    owner         regrole,
    command       text
);
COMMENT ON TYPE jobq.job_status IS 'state of one job: what jobq.status() returns and jobq.jobs lists';

/*
 * The jobs the workers are running now.  A claim is a row lock held by
 * the transaction that runs the job, so the tables do not say which jobs
 * run; the workers' shared slots do.
 */
CREATE FUNCTION jobq.running_jobs()
RETURNS TABLE (id bigint, worker_pid integer, attempts integer,
               started_at timestamptz)
LANGUAGE C VOLATILE PARALLEL RESTRICTED ROWS 8
AS 'MODULE_PATHNAME', 'jobq_running_jobs';
COMMENT ON FUNCTION jobq.running_jobs() IS 'jobs being run now: id, worker pid, attempt number, start of the attempt';

CREATE VIEW jobq.jobs WITH (security_invoker = true) AS
    SELECT j.id, j.queue,
           CASE WHEN r.id IS NULL THEN j.state ELSE 'running' END AS state,
           j.priority, COALESCE(r.attempts, j.attempts) AS attempts,
           j.max_attempts, j.run_at, j.created_at,
           COALESCE(r.started_at, j.started_at) AS started_at,
           NULL::timestamptz AS finished_at, NULL::jsonb AS result,
           j.last_error, j.last_sqlstate, r.worker_pid, j.owner, j.command
      FROM jobq.job j LEFT JOIN jobq.running_jobs() r ON r.id = j.id
    UNION ALL
    SELECT id, queue, state, priority, attempts, max_attempts, run_at,
           created_at, started_at, finished_at, result, last_error,
           last_sqlstate, worker_pid, owner, command
      FROM jobq.job_history;
GRANT SELECT ON jobq.jobs TO PUBLIC;

COMMENT ON VIEW jobq.jobs IS 'every job the current role may see: unfinished ones and finished ones within jobq.retention';
COMMENT ON COLUMN jobq.jobs.id IS 'job id, returned by jobq.enqueue()';
COMMENT ON COLUMN jobq.jobs.queue IS 'queue the job belongs to';
COMMENT ON COLUMN jobq.jobs.state IS 'pending, running, succeeded, failed or cancelled';
COMMENT ON COLUMN jobq.jobs.priority IS 'higher runs first, from -1000 to 1000';
COMMENT ON COLUMN jobq.jobs.attempts IS 'attempts started so far, the current one included';
COMMENT ON COLUMN jobq.jobs.max_attempts IS 'attempts allowed before the job fails for good';
COMMENT ON COLUMN jobq.jobs.run_at IS 'when the job is (or was) next due';
COMMENT ON COLUMN jobq.jobs.created_at IS 'when the job was enqueued';
COMMENT ON COLUMN jobq.jobs.started_at IS 'when the current or last attempt started';
COMMENT ON COLUMN jobq.jobs.finished_at IS 'when the job finished, for finished jobs';
COMMENT ON COLUMN jobq.jobs.result IS 'first row of the last statement of a succeeded SQL job, as a JSON object';
COMMENT ON COLUMN jobq.jobs.last_error IS 'message of the last error';
COMMENT ON COLUMN jobq.jobs.last_sqlstate IS 'SQLSTATE of the last error';
COMMENT ON COLUMN jobq.jobs.worker_pid IS 'process id of the worker that runs or ran the job';
COMMENT ON COLUMN jobq.jobs.owner IS 'role that enqueued the job; the job runs with its privileges';
COMMENT ON COLUMN jobq.jobs.command IS 'the SQL the job runs';

/*
 * API
 */
CREATE FUNCTION jobq.enqueue(
    command      text,
    queue        text DEFAULT 'default',
    priority     integer DEFAULT 0,
    run_at       timestamptz DEFAULT pg_catalog.now(),
    max_attempts integer DEFAULT NULL,
    timeout      interval DEFAULT NULL)
RETURNS bigint
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'jobq_enqueue';
-- No SET search_path here: the C code resolves nothing through the
-- caller's search_path (its INSERT is schema-qualified and prepared once),
-- and a SET clause tripled the cost of a call (measured, bulk enqueue).


COMMENT ON FUNCTION jobq.enqueue(text, text, integer, timestamptz, integer, interval) IS
'queue a SQL job that runs as the current role; returns its id. max_attempts NULL means jobq.default_max_attempts, timeout NULL means jobq.default_timeout, timeout 0 means no limit';

CREATE FUNCTION jobq.status(id bigint)
RETURNS jobq.job_status
LANGUAGE plpgsql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    st jobq.job_status;
BEGIN
    SELECT j.* INTO st FROM jobq.jobs j WHERE j.id = status.id;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING
            ERRCODE = 'undefined_object',
            MESSAGE = format('job %s does not exist', status.id),
            DETAIL = 'It may have finished longer ago than jobq.retention, or belong to another role.';
    END IF;
    RETURN st;
END
$$;

COMMENT ON FUNCTION jobq.status(bigint) IS 'state, attempts, times, result and last error of one of your jobs';
