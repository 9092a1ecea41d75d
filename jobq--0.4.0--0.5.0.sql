/* jobq--0.4.0--0.5.0.sql: dump and restore keep everything; unused columns go */

\echo Use "ALTER EXTENSION jobq UPDATE TO '0.5.0'" to load this file. \quit

/*
 * The install script no longer writes a row for queue "default": pg_dump
 * dumps jobq.queues whole, and the row the install script had written
 * again in the restored database made the restore of that table fail, so
 * every configured queue's settings were lost.  A "default" row that holds
 * no setting is removed; one that was configured stays, as any other.
 */
DELETE FROM jobq.queues
 WHERE queue OPERATOR(pg_catalog.=) 'default'
   AND concurrency IS NULL AND NOT paused;

/*
 * jobq.job.state was always 'pending' since 0.2.0 (a job runs while its
 * row is locked), and jobq.job.worker_pid was no longer written: both go.
 * The claim index loses its predicate on state, and the views their
 * references to it.  (jobq.job_history keeps both columns.)
 */
/*
 * External tasks and executors (jobq.claim() and its lease): the jobs
 * carry whether external executors run them, and while one does, its
 * lease; the history keeps which executor ran a job.
 */
-- (external is filled, then made NOT NULL, so that the tables are those
-- of a fresh install: no "missing value" kept for the old rows)
ALTER TABLE jobq.job
    ADD COLUMN external boolean,
    ADD COLUMN executor text,
    ADD COLUMN lease_token uuid,
    ADD COLUMN lease_expires_at timestamptz;
UPDATE jobq.job SET external = false;
ALTER TABLE jobq.job
    ALTER COLUMN external SET DEFAULT false,
    ALTER COLUMN external SET NOT NULL,
    ADD CONSTRAINT job_external_task CHECK (NOT external OR task IS NOT NULL),
    ADD CONSTRAINT job_lease CHECK ((lease_token IS NULL) = (lease_expires_at IS NULL)
                                    AND (lease_token IS NULL OR external));
ALTER TABLE jobq.job_history
    ADD COLUMN external boolean,
    ADD COLUMN executor text;
UPDATE jobq.job_history SET external = false;
ALTER TABLE jobq.job_history
    ALTER COLUMN external SET DEFAULT false,
    ALTER COLUMN external SET NOT NULL;
ALTER TYPE jobq.job_status ADD ATTRIBUTE executor text;
ALTER TABLE jobq.task ALTER COLUMN fn DROP NOT NULL;

CREATE OR REPLACE VIEW jobq.jobs WITH (security_invoker = true) AS
    SELECT j.id, j.queue,
           CASE WHEN r.id IS NOT NULL OR j.lease_expires_at IS NOT NULL
                THEN 'running'::jobq.job_state ELSE 'pending' END AS state,
           j.priority, COALESCE(r.attempts, j.attempts) AS attempts,
           j.max_attempts, COALESCE(j.not_before, j.run_at) AS run_at, j.created_at,
           COALESCE(r.started_at, j.started_at) AS started_at,
           NULL::timestamptz AS finished_at, NULL::jsonb AS result,
           j.last_error, j.last_sqlstate, r.worker_pid, j.owner, j.command,
           j.task, j.payload, j.dedup_key, j.depends_on, j.executor
      FROM jobq.job j LEFT JOIN jobq.running_jobs() r ON r.id = j.id
    UNION ALL
    SELECT id, queue, state, priority, attempts, max_attempts, run_at,
           created_at, started_at, finished_at, result, last_error,
           last_sqlstate, worker_pid, owner, command, task, payload, dedup_key,
           depends_on, executor
      FROM jobq.job_history;
CREATE OR REPLACE VIEW jobq.queue_stats WITH (security_invoker = true) AS
    SELECT q.queue,
           (SELECT pg_catalog.count(*) FROM jobq.job j
             WHERE j.queue = q.queue
               AND j.run_at <= pg_catalog.now() AND j.lease_expires_at IS NULL
               AND j.id NOT IN (SELECT r.id FROM jobq.running_jobs() r)) AS pending,
           (SELECT pg_catalog.count(*) FROM jobq.job j
             WHERE j.queue = q.queue
               AND j.run_at > pg_catalog.now()) AS scheduled,
           (SELECT pg_catalog.count(*) FROM jobq.worker_info() w
             WHERE w.queue = q.queue) +
           (SELECT pg_catalog.count(*) FROM jobq.job j
             WHERE j.queue = q.queue AND j.lease_expires_at IS NOT NULL) AS running,
           h.succeeded_1m, h.failed_1m, h.succeeded_1h, h.failed_1h,
           (SELECT pg_catalog.now() - pg_catalog.min(j.run_at) FROM jobq.job j
             WHERE j.queue = q.queue
               AND j.run_at <= pg_catalog.now() AND j.lease_expires_at IS NULL) AS oldest_due_age,
           c.concurrency, COALESCE(c.paused, false) AS paused
      FROM (SELECT qs.queue FROM jobq.queues qs
            UNION
            SELECT j.queue FROM jobq.job j
            UNION
            SELECT jh.queue FROM jobq.job_history jh
             WHERE jh.finished_at > pg_catalog.now() - interval '1 hour') q
      LEFT JOIN jobq.queues c ON c.queue = q.queue,
           LATERAL (SELECT pg_catalog.count(*) FILTER (WHERE state = 'succeeded'
                               AND finished_at > pg_catalog.now() - interval '1 minute') AS succeeded_1m,
                           pg_catalog.count(*) FILTER (WHERE state IN ('failed', 'cancelled')
                               AND finished_at > pg_catalog.now() - interval '1 minute') AS failed_1m,
                           pg_catalog.count(*) FILTER (WHERE state = 'succeeded') AS succeeded_1h,
                           pg_catalog.count(*) FILTER (WHERE state IN ('failed', 'cancelled')) AS failed_1h
                      FROM jobq.job_history jh
                     WHERE jh.queue = q.queue
                       AND jh.finished_at > pg_catalog.now() - interval '1 hour') h;
DROP INDEX jobq.job_claim_idx;
ALTER TABLE jobq.job DROP COLUMN state, DROP COLUMN worker_pid;
COMMENT ON TABLE jobq.job IS 'unfinished jobs; written only by the jobq API and workers, which lock the rows of the jobs they run';

-- jobq.workers shows a worker asked to stop as 'stopping'
COMMENT ON COLUMN jobq.workers.state IS 'starting, idle, busy (running a job), or stopping (the pool shrank: it exits after the job in hand)';

COMMENT ON COLUMN jobq.job.external IS 'true for a job of an external task: external executors run it (jobq.claim()), the workers never do';
COMMENT ON COLUMN jobq.job.executor IS 'name of the external executor that holds (or last held) the job''s lease';
COMMENT ON COLUMN jobq.job.lease_token IS 'while an external executor holds the job: the MD5 digest of the token that its jobq.heartbeat(), jobq.complete() and jobq.fail() must give (the token itself is known only to the executor)';
COMMENT ON COLUMN jobq.job.lease_expires_at IS 'while an external executor holds the job: when its lease ends unless extended';

-- the workers' claim: due jobs by priority, then run_at, then id
CREATE INDEX job_claim_idx ON jobq.job (priority DESC, run_at, id) WHERE NOT external;
-- the external executors' claim, in the same order, among unleased jobs
CREATE INDEX job_external_idx ON jobq.job (priority DESC, run_at, id)
    WHERE external AND lease_token IS NULL;
-- the leases, by expiry
CREATE INDEX job_lease_idx ON jobq.job (lease_expires_at) WHERE lease_token IS NOT NULL;

COMMENT ON COLUMN jobq.jobs.executor IS 'for a job of an external task: the executor that holds or held its lease';
COMMENT ON COLUMN jobq.jobs.worker_pid IS 'process id of the worker that runs or ran the job; null for external tasks';
COMMENT ON COLUMN jobq.task.fn IS 'function (jsonb) -> jsonb that runs the task, with the payload; null for an external task, which external executors run (jobq.claim())';
COMMENT ON FUNCTION jobq.register_task(text, regprocedure) IS
'register function fn(jsonb) returns jsonb under the name task, or, with fn NULL, an external task that executors outside the server run (jobq.claim()); or register the task again';
COMMENT ON COLUMN jobq.queue_stats.pending IS 'jobs due and waiting for a worker or an external executor';
COMMENT ON COLUMN jobq.queue_stats.running IS 'jobs being run now by a worker, or leased by an external executor';

/*
 * External executors.  Jobs of a task registered without a function
 * (external tasks) are run by processes outside the server: they claim
 * jobs with a lease, keep it with heartbeats and end it with an outcome.
 * A claim commits the running state, the counted attempt and the lease;
 * a lease that ends without an outcome puts the job back (attempt
 * counted) within a second, done by the worker pool.  Claiming and
 * finishing jobs of every role is the administrator's to grant.
 */
CREATE FUNCTION jobq.claim(tasks text[] DEFAULT NULL, queues text[] DEFAULT NULL,
                           n integer DEFAULT 1, lease interval DEFAULT '30 s',
                           executor text DEFAULT NULL, wait interval DEFAULT '0',
                           executor_host text DEFAULT NULL,
                           executor_pid integer DEFAULT NULL)
RETURNS TABLE (id bigint, task text, payload jsonb, queue text, priority smallint,
               attempt integer, max_attempts integer, timeout interval,
               lease_token uuid, lease_expires_at timestamptz, owner regrole,
               run_at timestamptz, created_at timestamptz)
LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 10
AS 'MODULE_PATHNAME', 'jobq_claim';
COMMENT ON FUNCTION jobq.claim(text[], text[], integer, interval, text, interval, text, integer) IS
'claim up to n due jobs of external tasks (of the given tasks and queues; NULL for any), by priority, holding each for lease; with wait, block until one is committed or wait has passed. The claim''s transaction commits the lease: call it outside a transaction block. executor names the caller in jobq.executors, with executor_host and executor_pid as it reports them';

CREATE FUNCTION jobq.heartbeat(id bigint, token uuid, extend interval DEFAULT '30 s')
RETURNS boolean
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'jobq_heartbeat';
COMMENT ON FUNCTION jobq.heartbeat(bigint, uuid, interval) IS
'extend the lease of a claimed job to at least extend from now; true if the job was cancelled (stop the work), an error with SQLSTATE JQ001 if the lease is lost';

CREATE FUNCTION jobq.complete(id bigint, token uuid, result jsonb DEFAULT NULL)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'jobq_complete';
COMMENT ON FUNCTION jobq.complete(bigint, uuid, jsonb) IS
'end a claimed job as succeeded, with its result; an error with SQLSTATE JQ001 if the lease is lost (the job ran again, or ended otherwise)';

CREATE FUNCTION jobq.complete(ids bigint[], tokens uuid[], results jsonb[] DEFAULT NULL)
RETURNS integer
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'jobq_complete_many';
COMMENT ON FUNCTION jobq.complete(bigint[], uuid[], jsonb[]) IS
'end up to 1000 claimed jobs as succeeded at once, ids[i] with lease tokens[i] and results[i]; all or nothing: an error with SQLSTATE JQ001 if one lease is lost. Returns how many';

CREATE FUNCTION jobq.fail(id bigint, token uuid, error text, retry_in interval DEFAULT NULL)
RETURNS jobq.job_state
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'jobq_fail';
COMMENT ON FUNCTION jobq.fail(bigint, uuid, text, interval) IS
'end the attempt of a claimed job with an error: pending again after retry_in (NULL: the backoff of jobq.retry_delay), or failed when no attempt is left; returns which. An error with SQLSTATE JQ001 if the lease is lost';

CREATE FUNCTION jobq.release(id bigint, token uuid)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'jobq_release';
COMMENT ON FUNCTION jobq.release(bigint, uuid) IS
'hand a claimed job back unrun (an executor that stops): pending again at once, its attempt not counted; an error with SQLSTATE JQ001 if the lease is lost';

-- executors are the administrator's to allow
REVOKE EXECUTE ON FUNCTION jobq.claim(text[], text[], integer, interval, text, interval, text, integer),
                           jobq.heartbeat(bigint, uuid, interval),
                           jobq.complete(bigint, uuid, jsonb),
                           jobq.complete(bigint[], uuid[], jsonb[]),
                           jobq.fail(bigint, uuid, text, interval),
                           jobq.release(bigint, uuid) FROM PUBLIC;

CREATE FUNCTION jobq.executor_info()
RETURNS TABLE (executor text, role regrole, host text, pid integer,
               jobs_claimed bigint, jobs_succeeded bigint, jobs_failed bigint,
               leases_expired bigint, first_seen timestamptz, last_seen timestamptz)
LANGUAGE C VOLATILE PARALLEL RESTRICTED ROWS 8
AS 'MODULE_PATHNAME', 'jobq_executor_info';
COMMENT ON FUNCTION jobq.executor_info() IS 'the external executors seen since the server started; see jobq.executors';

CREATE VIEW jobq.executors WITH (security_invoker = true) AS
    SELECT e.executor, e.role, e.host, e.pid,
           (SELECT pg_catalog.array_agg(j.id ORDER BY j.id) FROM jobq.job j
             WHERE j.executor OPERATOR(pg_catalog.=) e.executor
               AND j.lease_expires_at IS NOT NULL) AS job_ids,
           e.jobs_claimed, e.jobs_succeeded, e.jobs_failed, e.leases_expired,
           e.first_seen, e.last_seen
      FROM jobq.executor_info() e;
GRANT SELECT ON jobq.executors TO PUBLIC;
COMMENT ON VIEW jobq.executors IS 'external executors, by the name they give jobq.claim(): where they run, the jobs they hold now, and what they did since the server started';
COMMENT ON COLUMN jobq.executors.executor IS 'the name the executor gives jobq.claim()';
COMMENT ON COLUMN jobq.executors.role IS 'the role it connects as';
COMMENT ON COLUMN jobq.executors.host IS 'host name, as the executor reports it';
COMMENT ON COLUMN jobq.executors.pid IS 'process id, as the executor reports it';
COMMENT ON COLUMN jobq.executors.job_ids IS 'jobs it holds a lease on now, of those the caller may see';
COMMENT ON COLUMN jobq.executors.jobs_claimed IS 'jobs it claimed';
COMMENT ON COLUMN jobq.executors.jobs_succeeded IS 'jobs it completed';
COMMENT ON COLUMN jobq.executors.jobs_failed IS 'attempts it failed';
COMMENT ON COLUMN jobq.executors.leases_expired IS 'leases it let expire';
COMMENT ON COLUMN jobq.executors.first_seen IS 'its first claim since the server started';
COMMENT ON COLUMN jobq.executors.last_seen IS 'its last claim, heartbeat or outcome';
