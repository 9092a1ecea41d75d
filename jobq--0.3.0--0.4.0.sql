/* jobq--0.3.0--0.4.0.sql: the security model (roles cannot reach each other) */

\echo Use "ALTER EXTENSION jobq UPDATE TO '0.4.0'" to load this file. \quit

/*
 * Dedup keys are per owner: a key is unique per queue and owner while its
 * job is unfinished, so no role can take, block or detect another role's
 * key.
 */
DROP INDEX jobq.job_dedup_idx;
CREATE UNIQUE INDEX job_dedup_idx ON jobq.job (queue, owner, dedup_key)
    WHERE dedup_key IS NOT NULL;
COMMENT ON COLUMN jobq.jobs.dedup_key IS 'while the job is unfinished, enqueueing with this key in its queue by the same role returns this job';

/*
 * The unfinished jobs that count against their role's max_pending (see
 * jobq.role_limits): those enqueued while the role had that limit.  Jobs
 * of roles without it have no entry in the index, so that their enqueues
 * pay nothing for it (a B-tree of one repeated owner made a bulk enqueue
 * 23 % dearer, counted in instructions).
 */
ALTER TABLE jobq.job ADD COLUMN counted boolean;
COMMENT ON COLUMN jobq.job.counted IS 'true if the job counts against its owner''s max_pending; null otherwise';
CREATE INDEX job_owner_idx ON jobq.job (owner) WHERE counted IS NOT NULL;

/*
 * Per-role limits, set by the administrator: how many unfinished jobs a
 * role may have (checked at enqueue) and how many of its jobs may run at
 * once (checked by the workers' claim).  A role without a row, or a null
 * limit, has no limit.
 */
CREATE TABLE jobq.role_limits (
    role        regrole NOT NULL PRIMARY KEY,
    max_pending integer CHECK (max_pending >= 0),
    max_running integer CHECK (max_running BETWEEN 0 AND 64),
    updated_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE jobq.role_limits IS 'per-role limits on unfinished and running jobs; written by jobq.configure_role()';
COMMENT ON COLUMN jobq.role_limits.role IS 'the role the limits apply to (jobs it owns)';
COMMENT ON COLUMN jobq.role_limits.max_pending IS 'most unfinished jobs the role may have; null for no limit';
COMMENT ON COLUMN jobq.role_limits.max_running IS 'most jobs of the role running at once across the pool; null for no limit';
COMMENT ON COLUMN jobq.role_limits.updated_at IS 'when the limits last changed';
REVOKE ALL ON jobq.role_limits FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('jobq.role_limits', '');

CREATE FUNCTION jobq.configure_role(role regrole, max_pending integer DEFAULT NULL,
                                    max_running integer DEFAULT NULL)
RETURNS jobq.role_limits
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'jobq_configure_role';
COMMENT ON FUNCTION jobq.configure_role(regrole, integer, integer) IS
'set the limits of a role: most unfinished jobs (max_pending) and most running jobs (max_running, 0 to 64); NULL means no limit. Returns the limits';
-- limits are the administrator's: grant EXECUTE to whom may change them
REVOKE EXECUTE ON FUNCTION jobq.configure_role(regrole, integer, integer) FROM PUBLIC;

/*
 * Queues.  An enqueue no longer inserts a row into jobq.queues: the first
 * enqueue into a new queue name took a lock that other roles' enqueues
 * into the same name waited for, and showed every role the queue names of
 * all others.  A queue now has a row once it is configured; it exists for
 * jobq.queue_stats from its first job on, as the caller sees its jobs.
 */
COMMENT ON TABLE jobq.queues IS 'settings of configured queues; written by jobq.configure_queue(), jobq.pause() and jobq.resume()';
COMMENT ON COLUMN jobq.queues.created_at IS 'when the queue was first configured (or, before 0.4.0, used)';

CREATE OR REPLACE VIEW jobq.queue_stats WITH (security_invoker = true) AS
    SELECT q.queue,
           (SELECT pg_catalog.count(*) FROM jobq.job j
             WHERE j.queue = q.queue AND j.state = 'pending'
               AND j.run_at <= pg_catalog.now()
               AND j.id NOT IN (SELECT r.id FROM jobq.running_jobs() r)) AS pending,
           (SELECT pg_catalog.count(*) FROM jobq.job j
             WHERE j.queue = q.queue AND j.state = 'pending'
               AND j.run_at > pg_catalog.now()) AS scheduled,
           (SELECT pg_catalog.count(*) FROM jobq.worker_info() w
             WHERE w.queue = q.queue) AS running,
           h.succeeded_1m, h.failed_1m, h.succeeded_1h, h.failed_1h,
           (SELECT pg_catalog.now() - pg_catalog.min(j.run_at) FROM jobq.job j
             WHERE j.queue = q.queue AND j.state = 'pending'
               AND j.run_at <= pg_catalog.now()) AS oldest_due_age,
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
COMMENT ON VIEW jobq.queue_stats IS 'one row per queue that is configured or has jobs the caller may see (unfinished, or finished in the last hour): due, scheduled and running jobs, finished ones in the last minute and hour, the oldest due job''s wait, and the queue''s settings';
