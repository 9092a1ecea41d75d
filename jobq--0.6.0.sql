/* jobq--0.6.0.sql: install script of version 0.6.0 */

\echo Use "CREATE EXTENSION jobq" to load this file. \quit

/*
 * CREATE EXTENSION jobq runs this script; databases created at an older
 * version reach the same schema through the upgrade scripts
 * (jobq--A--B.sql).  test/t/012_install_paths.pl compares the two.  When
 * the schema changes, both this script (renamed for the new version) and
 * a new upgrade script change: column order included, since an upgrade
 * adds columns at the end.
 */

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
 * A job runs either a command (SQL) or a registered task with a payload.
 */
CREATE SEQUENCE jobq.job_id_seq AS bigint;

CREATE TABLE jobq.job (
    id            bigint NOT NULL DEFAULT pg_catalog.nextval('jobq.job_id_seq') PRIMARY KEY,
    queue         text NOT NULL DEFAULT 'default',
    priority      smallint NOT NULL DEFAULT 0,
    run_at        timestamptz NOT NULL DEFAULT pg_catalog.now(),
    attempts      integer NOT NULL DEFAULT 0,
    max_attempts  integer NOT NULL,
    timeout       interval,
    owner         regrole NOT NULL,
    command       text,
    created_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    started_at    timestamptz,
    last_error    text,
    last_sqlstate text,
    task          text,
    payload       jsonb,
    dedup_key     text,
    depends_on    bigint[],
    not_before    timestamptz,
    counted       boolean,
    external      boolean NOT NULL DEFAULT false,
    executor      text,
    lease_token   uuid,
    lease_expires_at timestamptz,
    CONSTRAINT job_command_or_task CHECK ((command IS NULL) <> (task IS NULL)),
    CONSTRAINT job_external_task CHECK (NOT external OR task IS NOT NULL),
    CONSTRAINT job_lease CHECK ((lease_token IS NULL) = (lease_expires_at IS NULL)
                                AND (lease_token IS NULL OR external))
) WITH (fillfactor = 80);
ALTER SEQUENCE jobq.job_id_seq OWNED BY jobq.job.id;
COMMENT ON TABLE jobq.job IS 'unfinished jobs; written only by the jobq API and workers, which lock the rows of the jobs they run';
COMMENT ON COLUMN jobq.job.counted IS 'true if the job counts against its owner''s max_pending; null otherwise';
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

/*
 * Dedup keys: while an unfinished job has a key, enqueueing another job
 * with that key in that queue by the same role returns the first one's
 * id.  The unique index is what makes concurrent enqueues agree; being
 * per owner, no role can take, block or detect another role's key.
 */
CREATE UNIQUE INDEX job_dedup_idx ON jobq.job (queue, owner, dedup_key)
    WHERE dedup_key IS NOT NULL;

/*
 * Dependencies: a job with depends_on waits (run_at infinity, its own
 * run_at kept in not_before) until every job it depends on has
 * succeeded; if one fails or is cancelled, it is cancelled.  The GIN
 * index finds the waiting jobs of a job that finishes.
 */
CREATE INDEX job_depends_idx ON jobq.job USING gin (depends_on)
    WHERE not_before IS NOT NULL;
-- the waiting jobs, for the workers' periodic sweep
CREATE INDEX job_waiting_idx ON jobq.job (id) WHERE not_before IS NOT NULL;

/*
 * The unfinished jobs that count against their role's max_pending (see
 * jobq.role_limits): those enqueued while the role had that limit.  Jobs
 * of roles without it have no entry in the index, so that their enqueues
 * pay nothing for it.
 */
CREATE INDEX job_owner_idx ON jobq.job (owner) WHERE counted IS NOT NULL;

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
    command       text,
    created_at    timestamptz NOT NULL,
    started_at    timestamptz,
    finished_at   timestamptz NOT NULL,
    result        jsonb,
    last_error    text,
    last_sqlstate text,
    worker_pid    integer,
    task          text,
    payload       jsonb,
    dedup_key     text,
    depends_on    bigint[],
    external      boolean NOT NULL DEFAULT false,
    executor      text,
    lease_token   uuid
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
    command       text,
    task          text,
    payload       jsonb,
    dedup_key     text,
    depends_on    bigint[],
    executor      text
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
COMMENT ON COLUMN jobq.jobs.last_error IS 'message of the last error';
COMMENT ON COLUMN jobq.jobs.last_sqlstate IS 'SQLSTATE of the last error';
COMMENT ON COLUMN jobq.jobs.worker_pid IS 'process id of the worker that runs or ran the job; null for external tasks';
COMMENT ON COLUMN jobq.jobs.owner IS 'role that enqueued the job; the job runs with its privileges';
COMMENT ON COLUMN jobq.jobs.command IS 'the SQL the job runs; null for a task';
COMMENT ON COLUMN jobq.jobs.task IS 'the registered task the job calls; null for SQL';
COMMENT ON COLUMN jobq.jobs.payload IS 'argument of the task''s function';
COMMENT ON COLUMN jobq.jobs.depends_on IS 'jobs that must succeed before this one runs';
COMMENT ON COLUMN jobq.jobs.dedup_key IS 'while the job is unfinished, enqueueing with this key in its queue by the same role returns this job';
COMMENT ON COLUMN jobq.jobs.executor IS 'for a job of an external task: the executor that holds or held its lease';
COMMENT ON COLUMN jobq.jobs.result IS 'a task''s return value, or the first row of the last statement of an SQL job as a JSON object';

/*
 * API
 */
CREATE FUNCTION jobq.enqueue(
    command      text,
    queue        text DEFAULT 'default',
    priority     integer DEFAULT 0,
    run_at       timestamptz DEFAULT pg_catalog.now(),
    max_attempts integer DEFAULT NULL,
    timeout      interval DEFAULT NULL,
    dedup_key    text DEFAULT NULL,
    depends_on   bigint[] DEFAULT NULL)
RETURNS bigint
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'jobq_enqueue';
-- No SET search_path here: the C code resolves nothing through the
-- caller's search_path (its INSERT is schema-qualified and prepared once),
-- and a SET clause tripled the cost of a call (measured, bulk enqueue).
COMMENT ON FUNCTION jobq.enqueue(text, text, integer, timestamptz, integer, interval, text, bigint[]) IS
'queue a SQL job that runs as the current role; returns its id, or the id of the unfinished job of the queue with the same dedup_key. max_attempts NULL means jobq.default_max_attempts, timeout NULL means jobq.default_timeout, timeout 0 means no limit; depends_on: jobs that must succeed first';

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

/*
 * Tasks.  A task is a name under which a function (jsonb) -> jsonb is
 * registered; jobq.enqueue_task() queues a call of it with a payload.  A
 * job is either a command (SQL) or a task with its payload.  The function
 * is looked up by the task's name when the job runs, so a task can be
 * registered again to another function, and a job whose task was
 * unregistered fails with a clear error.
 */
CREATE TABLE jobq.task (
    task          text NOT NULL PRIMARY KEY,
    fn            regprocedure,
    registered_by regrole NOT NULL,
    registered_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    executors     regrole[]
);
COMMENT ON TABLE jobq.task IS 'registered tasks: the function each task name calls; written by jobq.register_task() and jobq.unregister_task()';
COMMENT ON COLUMN jobq.task.task IS 'name given to jobq.enqueue_task()';
COMMENT ON COLUMN jobq.task.fn IS 'function (jsonb) -> jsonb that runs the task, with the payload; null for an external task, which external executors run (jobq.claim())';
COMMENT ON COLUMN jobq.task.registered_by IS 'role that registered the task; it (or a superuser) may register it again or unregister it';
COMMENT ON COLUMN jobq.task.registered_at IS 'when the task was last registered';
COMMENT ON COLUMN jobq.task.executors IS 'roles an administrator allowed to run the jobs of an external task (jobq.allow_executor()), besides its registrant; their members may too';
REVOKE ALL ON jobq.task FROM PUBLIC;
GRANT SELECT ON jobq.task TO PUBLIC;
-- pg_dump keeps the tasks users registered; the built-in ones come with
-- CREATE EXTENSION
SELECT pg_catalog.pg_extension_config_dump('jobq.task',
    $$WHERE task OPERATOR(pg_catalog.!~) '^jobq\.'$$);

CREATE FUNCTION jobq.register_task(task text, fn regprocedure)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'jobq_register_task';
COMMENT ON FUNCTION jobq.register_task(text, regprocedure) IS
'register function fn(jsonb) returns jsonb under the name task, or, with fn NULL, an external task that executors outside the server run (jobq.claim()); or register the task again';

CREATE FUNCTION jobq.unregister_task(task text)
RETURNS boolean
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'jobq_unregister_task';
COMMENT ON FUNCTION jobq.unregister_task(text) IS
'remove a registered task; false if it was not registered. Queued jobs of the task fail when they run';

CREATE FUNCTION jobq.enqueue_task(
    task         text,
    payload      jsonb DEFAULT '{}',
    queue        text DEFAULT 'default',
    priority     integer DEFAULT 0,
    run_at       timestamptz DEFAULT pg_catalog.now(),
    max_attempts integer DEFAULT NULL,
    timeout      interval DEFAULT NULL,
    dedup_key    text DEFAULT NULL,
    depends_on   bigint[] DEFAULT NULL)
RETURNS bigint
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'jobq_enqueue_task';
COMMENT ON FUNCTION jobq.enqueue_task(text, jsonb, text, integer, timestamptz, integer, interval, text, bigint[]) IS
'queue a call of the function registered as task, with payload, that runs as the current role; returns the job id. Other arguments as for jobq.enqueue()';

CREATE FUNCTION jobq.current_job()
RETURNS bigint
LANGUAGE C VOLATILE PARALLEL RESTRICTED
AS 'MODULE_PATHNAME', 'jobq_current_job';
COMMENT ON FUNCTION jobq.current_job() IS
'inside a job: its id; null elsewhere';

/*
 * Built-in tasks, written in C: jobq.noop returns its payload, jobq.sleep
 * sleeps for the payload's "seconds".  Task names that begin with "jobq."
 * belong to the extension.
 */
CREATE FUNCTION jobq.noop(payload jsonb)
RETURNS jsonb
LANGUAGE C VOLATILE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'jobq_noop';
COMMENT ON FUNCTION jobq.noop(jsonb) IS 'built-in task jobq.noop: returns its payload';

CREATE FUNCTION jobq.sleep(payload jsonb)
RETURNS jsonb
LANGUAGE C VOLATILE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'jobq_sleep';
COMMENT ON FUNCTION jobq.sleep(jsonb) IS
'built-in task jobq.sleep: sleeps for the payload''s "seconds" (a number from 0 to 86400), interruptibly; returns the payload';

INSERT INTO jobq.task (task, fn, registered_by)
VALUES ('jobq.noop', 'jobq.noop(jsonb)', CURRENT_USER::regrole),
       ('jobq.sleep', 'jobq.sleep(jsonb)', CURRENT_USER::regrole);

/*
 * The worker pool, from the workers' shared slots.
 */
CREATE FUNCTION jobq.worker_info()
RETURNS TABLE (worker integer, pid integer, state text, job_id bigint,
               queue text, job_started_at timestamptz,
               jobs_succeeded bigint, jobs_retried bigint, jobs_failed bigint,
               started_at timestamptz)
LANGUAGE C VOLATILE PARALLEL RESTRICTED ROWS 8
AS 'MODULE_PATHNAME', 'jobq_worker_info';
COMMENT ON FUNCTION jobq.worker_info() IS 'one row per worker slot of the pool; see jobq.workers';

CREATE VIEW jobq.workers AS
    SELECT worker, pid, state, job_id, queue, job_started_at,
           jobs_succeeded, jobs_retried, jobs_failed, started_at
      FROM jobq.worker_info();
GRANT SELECT ON jobq.workers TO PUBLIC;
COMMENT ON VIEW jobq.workers IS 'the worker pool: one row per slot, what each worker runs now and what it ran since it started';
COMMENT ON COLUMN jobq.workers.worker IS 'slot number, from 1 to jobq.workers';
COMMENT ON COLUMN jobq.workers.pid IS 'process id of the worker; null while it is starting';
COMMENT ON COLUMN jobq.workers.state IS 'starting, idle, busy (running a job), or stopping (the pool shrank: it exits after the job in hand)';
COMMENT ON COLUMN jobq.workers.job_id IS 'job being run; null if none, or if it is another role''s and you are not a member of pg_monitor';
COMMENT ON COLUMN jobq.workers.queue IS 'queue of the job being run';
COMMENT ON COLUMN jobq.workers.job_started_at IS 'when the attempt being run started';
COMMENT ON COLUMN jobq.workers.jobs_succeeded IS 'jobs the worker ran that succeeded, since it started';
COMMENT ON COLUMN jobq.workers.jobs_retried IS 'attempts the worker ran that failed and were scheduled again, since it started';
COMMENT ON COLUMN jobq.workers.jobs_failed IS 'jobs the worker ran that failed for good, since it started';
COMMENT ON COLUMN jobq.workers.started_at IS 'when the worker started';

/*
 * Acting on one job: cancel, retry, wait.
 */
CREATE FUNCTION jobq.cancel(id bigint)
RETURNS boolean
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'jobq_cancel';
COMMENT ON FUNCTION jobq.cancel(bigint) IS
'cancel a job: a pending one at once, a running one interrupted and rolled back; true if it ends cancelled, false if it had finished';

CREATE FUNCTION jobq.retry(id bigint)
RETURNS boolean
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'jobq_retry';
COMMENT ON FUNCTION jobq.retry(bigint) IS
'run a failed or cancelled job again, due now, with its attempts counted from zero; false for unfinished or succeeded jobs';

CREATE FUNCTION jobq.wait(id bigint, timeout interval DEFAULT NULL)
RETURNS jobq.job_status
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'jobq_wait';
COMMENT ON FUNCTION jobq.wait(bigint, interval) IS
'wait until the job has finished, or timeout has passed (NULL: no limit), and return its status; needs READ COMMITTED';

/*
 * Queues.  A queue exists from its first job on, with default settings:
 * no concurrency limit, not paused.  jobq.configure_queue(), jobq.pause()
 * and jobq.resume() give it a row of settings in jobq.queues,
 * transactionally: workers apply them from the commit on.  An enqueue
 * writes no row here, so that no role waits for another's new queue name
 * or sees it; the install script writes none either, so that a restored
 * dump brings back exactly the rows configured.
 */
CREATE TABLE jobq.queues (
    queue       text NOT NULL PRIMARY KEY
                CHECK (pg_catalog.length(queue) BETWEEN 1 AND 63),
    concurrency integer CHECK (concurrency BETWEEN 1 AND 64),
    paused      boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE jobq.queues IS 'settings of configured queues; written by jobq.configure_queue(), jobq.pause() and jobq.resume()';
COMMENT ON COLUMN jobq.queues.queue IS 'queue name';
COMMENT ON COLUMN jobq.queues.concurrency IS 'most jobs of the queue running at once across the pool; null for no limit';
COMMENT ON COLUMN jobq.queues.paused IS 'a paused queue''s jobs wait; other queues go on';
COMMENT ON COLUMN jobq.queues.created_at IS 'when the queue was first configured (or, before 0.4.0, used)';
COMMENT ON COLUMN jobq.queues.updated_at IS 'when its settings last changed';
REVOKE ALL ON jobq.queues FROM PUBLIC;
GRANT SELECT ON jobq.queues TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('jobq.queues', '');

CREATE FUNCTION jobq.configure_queue(queue text, concurrency integer DEFAULT NULL,
                                     paused boolean DEFAULT NULL)
RETURNS jobq.queues
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'jobq_configure_queue';
COMMENT ON FUNCTION jobq.configure_queue(text, integer, boolean) IS
'create a queue or change its settings: concurrency (1 to 64, 0 for no limit), paused; NULL leaves a setting as it is. Returns the settings';

CREATE FUNCTION jobq.pause(queue text)
RETURNS jobq.queues
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'jobq_pause';
COMMENT ON FUNCTION jobq.pause(text) IS 'pause a queue: its jobs wait (running ones finish); returns its settings';

CREATE FUNCTION jobq.resume(queue text)
RETURNS jobq.queues
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'jobq_resume';
COMMENT ON FUNCTION jobq.resume(text) IS 'resume a paused queue; returns its settings';

-- queue settings are the administrator's: grant EXECUTE to whom may change them
REVOKE EXECUTE ON FUNCTION jobq.configure_queue(text, integer, boolean),
                           jobq.pause(text), jobq.resume(text) FROM PUBLIC;

/*
 * Per-queue counts.  Runs with the caller's privileges (security_invoker):
 * a role counts the jobs it may see, in the queues that are configured or
 * have jobs it may see.
 */
CREATE VIEW jobq.queue_stats WITH (security_invoker = true) AS
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
GRANT SELECT ON jobq.queue_stats TO PUBLIC;
COMMENT ON VIEW jobq.queue_stats IS 'one row per queue that is configured or has jobs the caller may see (unfinished, or finished in the last hour): due, scheduled and running jobs, finished ones in the last minute and hour, the oldest due job''s wait, and the queue''s settings';
COMMENT ON COLUMN jobq.queue_stats.queue IS 'queue name';
COMMENT ON COLUMN jobq.queue_stats.pending IS 'jobs due and waiting for a worker or an external executor';
COMMENT ON COLUMN jobq.queue_stats.scheduled IS 'jobs due later (delayed, or waiting for a retry)';
COMMENT ON COLUMN jobq.queue_stats.running IS 'jobs being run now by a worker, or leased by an external executor';
COMMENT ON COLUMN jobq.queue_stats.succeeded_1m IS 'jobs that succeeded in the last minute';
COMMENT ON COLUMN jobq.queue_stats.failed_1m IS 'jobs that failed for good or were cancelled in the last minute';
COMMENT ON COLUMN jobq.queue_stats.succeeded_1h IS 'jobs that succeeded in the last hour';
COMMENT ON COLUMN jobq.queue_stats.failed_1h IS 'jobs that failed for good or were cancelled in the last hour';
COMMENT ON COLUMN jobq.queue_stats.oldest_due_age IS 'how long the oldest due job has been waiting';
COMMENT ON COLUMN jobq.queue_stats.concurrency IS 'the queue''s concurrency limit; null for none';
COMMENT ON COLUMN jobq.queue_stats.paused IS 'whether the queue is paused';

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

CREATE FUNCTION jobq.allow_executor(task text, executor regrole, registrant regrole DEFAULT NULL)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'jobq_allow_executor';
COMMENT ON FUNCTION jobq.allow_executor(text, regrole, regrole) IS
'allow role executor (and its members) to claim the jobs of external task task; with registrant, only if that role registered the task';

CREATE FUNCTION jobq.disallow_executor(task text, executor regrole)
RETURNS boolean
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'jobq_disallow_executor';
COMMENT ON FUNCTION jobq.disallow_executor(text, regrole) IS
'no longer allow role executor to claim the jobs of external task task; false if it was not allowed';

-- which executor runs which task is the administrator's to say
REVOKE EXECUTE ON FUNCTION jobq.allow_executor(text, regrole, regrole),
                           jobq.disallow_executor(text, regrole) FROM PUBLIC;

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
COMMENT ON VIEW jobq.executors IS 'external executors, by role and the name they give jobq.claim(): where they run, the jobs they hold now, and what they did since the server started';
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
