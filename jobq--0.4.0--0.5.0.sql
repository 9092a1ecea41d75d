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
CREATE OR REPLACE VIEW jobq.jobs WITH (security_invoker = true) AS
    SELECT j.id, j.queue,
           CASE WHEN r.id IS NULL THEN 'pending'::jobq.job_state ELSE 'running' END AS state,
           j.priority, COALESCE(r.attempts, j.attempts) AS attempts,
           j.max_attempts, COALESCE(j.not_before, j.run_at) AS run_at, j.created_at,
           COALESCE(r.started_at, j.started_at) AS started_at,
           NULL::timestamptz AS finished_at, NULL::jsonb AS result,
           j.last_error, j.last_sqlstate, r.worker_pid, j.owner, j.command,
           j.task, j.payload, j.dedup_key, j.depends_on
      FROM jobq.job j LEFT JOIN jobq.running_jobs() r ON r.id = j.id
    UNION ALL
    SELECT id, queue, state, priority, attempts, max_attempts, run_at,
           created_at, started_at, finished_at, result, last_error,
           last_sqlstate, worker_pid, owner, command, task, payload, dedup_key,
           depends_on
      FROM jobq.job_history;
CREATE OR REPLACE VIEW jobq.queue_stats WITH (security_invoker = true) AS
    SELECT q.queue,
           (SELECT pg_catalog.count(*) FROM jobq.job j
             WHERE j.queue = q.queue
               AND j.run_at <= pg_catalog.now()
               AND j.id NOT IN (SELECT r.id FROM jobq.running_jobs() r)) AS pending,
           (SELECT pg_catalog.count(*) FROM jobq.job j
             WHERE j.queue = q.queue
               AND j.run_at > pg_catalog.now()) AS scheduled,
           (SELECT pg_catalog.count(*) FROM jobq.worker_info() w
             WHERE w.queue = q.queue) AS running,
           h.succeeded_1m, h.failed_1m, h.succeeded_1h, h.failed_1h,
           (SELECT pg_catalog.now() - pg_catalog.min(j.run_at) FROM jobq.job j
             WHERE j.queue = q.queue
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
DROP INDEX jobq.job_claim_idx;
ALTER TABLE jobq.job DROP COLUMN state, DROP COLUMN worker_pid;
CREATE INDEX job_claim_idx ON jobq.job (priority DESC, run_at, id);
COMMENT ON TABLE jobq.job IS 'unfinished jobs; written only by the jobq API and workers, which lock the rows of the jobs they run';

-- jobq.workers shows a worker asked to stop as 'stopping'
COMMENT ON COLUMN jobq.workers.state IS 'starting, idle, busy (running a job), or stopping (the pool shrank: it exits after the job in hand)';
