/* jobq--0.1.0--0.2.0.sql: claims become row locks */

\echo Use "ALTER EXTENSION jobq UPDATE TO '0.2.0'" to load this file. \quit

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

CREATE OR REPLACE VIEW jobq.jobs WITH (security_invoker = true) AS
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

-- Version 0.1.0 marked claimed jobs running and counted the attempt at the
-- claim.  The workers of 0.2.0 claim with row locks and leave such rows
-- alone: make them pending again, their attempts stay counted.
UPDATE jobq.job SET state = 'pending', worker_pid = NULL WHERE state = 'running';
