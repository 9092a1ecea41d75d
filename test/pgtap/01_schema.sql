-- pgTAP: jobq's schema objects, as the extension installs them.
--
-- Schema jobq and its membership of the extension, the tables with their
-- columns, keys and the claim index, the types, the view, row-level
-- security being on, and the registration of the tables for pg_dump.
BEGIN;
SELECT plan(162);

SET LOCAL search_path = public;

/*
 * Schema and extension
 */
SELECT has_extension('jobq', 'extension jobq is installed');
SELECT has_schema('jobq', 'schema jobq exists');
SELECT ok(
    EXISTS (SELECT 1
              FROM pg_depend d
              JOIN pg_extension e ON e.oid = d.refobjid
             WHERE d.classid = 'pg_namespace'::regclass
               AND d.objid = (SELECT oid FROM pg_namespace WHERE nspname = 'jobq')
               AND d.refclassid = 'pg_extension'::regclass
               AND e.extname = 'jobq'
               AND d.deptype = 'e'),
    'schema jobq is a member of extension jobq (DROP EXTENSION jobq drops it)');
SELECT ok(
    NOT (SELECT extrelocatable FROM pg_extension WHERE extname = 'jobq'),
    'extension jobq is not relocatable');

/*
 * jobq.job: unfinished jobs
 */
SELECT has_table('jobq', 'job', 'table jobq.job exists');
SELECT columns_are('jobq', 'job', ARRAY[
    'id', 'queue', 'priority', 'run_at', 'attempts', 'max_attempts',
    'timeout', 'owner', 'command', 'created_at', 'started_at',
    'last_error', 'last_sqlstate', 'task', 'payload', 'dedup_key', 'depends_on',
    'not_before', 'counted', 'external', 'executor', 'lease_token', 'lease_expires_at'],
    'jobq.job has exactly the documented columns');
SELECT col_type_is('jobq', 'job', c, t, format('jobq.job.%s is %s', c, t))
  FROM (VALUES ('id', 'bigint'),
               ('queue', 'text'),
               ('priority', 'smallint'),
               ('run_at', 'timestamp with time zone'),
               ('attempts', 'integer'),
               ('max_attempts', 'integer'),
               ('timeout', 'interval'),
               ('owner', 'regrole'),
               ('command', 'text'),
               ('created_at', 'timestamp with time zone'),
               ('started_at', 'timestamp with time zone'),
               ('last_error', 'text'),
               ('last_sqlstate', 'text'),
               ('task', 'text'),
               ('payload', 'jsonb'),
               ('dedup_key', 'text'),
               ('depends_on', 'bigint[]'),
               ('not_before', 'timestamp with time zone'),
               ('external', 'boolean'),
               ('executor', 'text'),
               ('lease_token', 'uuid'),
               ('lease_expires_at', 'timestamp with time zone')) AS v(c, t);
SELECT col_not_null('jobq', 'job', c, format('jobq.job.%s is NOT NULL', c))
  FROM unnest(ARRAY['id', 'queue', 'priority', 'run_at', 'attempts',
                    'max_attempts', 'owner', 'created_at', 'external']) AS c;
-- a job is SQL or a task, never both, never neither
SELECT is(
    (SELECT pg_get_constraintdef(oid) FROM pg_constraint
      WHERE conrelid = to_regclass('jobq.job') AND conname = 'job_command_or_task'),
    'CHECK (((command IS NULL) <> (task IS NULL)))',
    'jobq.job holds either a command or a task');
SELECT has_pk('jobq', 'job', 'jobq.job has a primary key');
SELECT col_is_pk('jobq', 'job', 'id', 'the primary key of jobq.job is id');

-- the claim: due jobs by priority (highest first), run_at, id
SELECT has_index('jobq', 'job', 'job_claim_idx', ARRAY['priority', 'run_at', 'id'],
                 'jobq.job has the claim index on (priority, run_at, id)');
SELECT is(
    pg_get_indexdef(to_regclass('jobq.job_claim_idx')),
    'CREATE INDEX job_claim_idx ON jobq.job USING btree (priority DESC, run_at, id) WHERE (NOT external)',
    'the claim index orders by priority DESC, run_at, id');
-- external executors claim in the same order from their own index, and
-- leases are found by expiry
SELECT is(
    pg_get_indexdef(to_regclass('jobq.job_external_idx')),
    'CREATE INDEX job_external_idx ON jobq.job USING btree (priority DESC, run_at, id) WHERE (external AND (lease_token IS NULL))',
    'the external claim index orders unleased external jobs by priority DESC, run_at, id');
SELECT is(
    pg_get_indexdef(to_regclass('jobq.job_lease_idx')),
    'CREATE INDEX job_lease_idx ON jobq.job USING btree (lease_expires_at) WHERE (lease_token IS NOT NULL)',
    'leases are indexed by expiry');
SELECT is(
    (SELECT pg_get_constraintdef(oid) FROM pg_constraint
      WHERE conrelid = to_regclass('jobq.job') AND conname = 'job_lease'),
    'CHECK ((((lease_token IS NULL) = (lease_expires_at IS NULL)) AND ((lease_token IS NULL) OR external)))',
    'a lease has a token and an expiry, and only jobs of external tasks have one');

-- dedup keys: unique per queue and owner among unfinished jobs
SELECT is(
    pg_get_indexdef(to_regclass('jobq.job_dedup_idx')),
    'CREATE UNIQUE INDEX job_dedup_idx ON jobq.job USING btree (queue, owner, dedup_key) WHERE (dedup_key IS NOT NULL)',
    'a dedup key is unique per queue and owner among the jobs of jobq.job');
-- a role's unfinished jobs, counted for its max_pending
SELECT is(
    pg_get_indexdef(to_regclass('jobq.job_owner_idx')),
    'CREATE INDEX job_owner_idx ON jobq.job USING btree (owner) WHERE (counted IS NOT NULL)',
    'the unfinished jobs that count against a role''s limit are indexed by owner');

-- waiting jobs: found by the jobs they wait for, and by the sweep
SELECT is(
    pg_get_indexdef(to_regclass('jobq.job_depends_idx')),
    'CREATE INDEX job_depends_idx ON jobq.job USING gin (depends_on) WHERE (not_before IS NOT NULL)',
    'the jobs that wait are indexed by the jobs they wait for');
SELECT is(
    pg_get_indexdef(to_regclass('jobq.job_waiting_idx')),
    'CREATE INDEX job_waiting_idx ON jobq.job USING btree (id) WHERE (not_before IS NOT NULL)',
    'the jobs that wait are indexed for the sweep');

/*
 * jobq.job_history: finished jobs
 */
SELECT has_table('jobq', 'job_history', 'table jobq.job_history exists');
SELECT columns_are('jobq', 'job_history', ARRAY[
    'id', 'queue', 'state', 'priority', 'run_at', 'attempts', 'max_attempts',
    'timeout', 'owner', 'command', 'created_at', 'started_at', 'finished_at',
    'result', 'last_error', 'last_sqlstate', 'worker_pid', 'task', 'payload', 'dedup_key',
    'depends_on', 'external', 'executor', 'lease_token'],
    'jobq.job_history has exactly the documented columns');
SELECT col_type_is('jobq', 'job_history', c, t, format('jobq.job_history.%s is %s', c, t))
  FROM (VALUES ('id', 'bigint'),
               ('queue', 'text'),
               ('state', 'jobq.job_state'),
               ('priority', 'smallint'),
               ('run_at', 'timestamp with time zone'),
               ('attempts', 'integer'),
               ('max_attempts', 'integer'),
               ('timeout', 'interval'),
               ('owner', 'regrole'),
               ('command', 'text'),
               ('created_at', 'timestamp with time zone'),
               ('started_at', 'timestamp with time zone'),
               ('finished_at', 'timestamp with time zone'),
               ('result', 'jsonb'),
               ('last_error', 'text'),
               ('last_sqlstate', 'text'),
               ('worker_pid', 'integer'),
               ('task', 'text'),
               ('payload', 'jsonb'),
               ('dedup_key', 'text'),
               ('depends_on', 'bigint[]'),
               ('external', 'boolean'),
               ('executor', 'text'),
               ('lease_token', 'uuid')) AS v(c, t);
SELECT has_pk('jobq', 'job_history', 'jobq.job_history has a primary key');
SELECT col_is_pk('jobq', 'job_history', 'id', 'the primary key of jobq.job_history is id');

-- both tables draw ids from one sequence, owned by jobq.job.id
SELECT has_sequence('jobq', 'job_id_seq', 'sequence jobq.job_id_seq exists');
SELECT is(
    pg_get_serial_sequence('jobq.job', 'id'),
    'jobq.job_id_seq',
    'jobq.job_id_seq is owned by jobq.job.id');

/*
 * Row-level security is on for both tables
 */
SELECT ok(
    (SELECT relrowsecurity FROM pg_class WHERE oid = to_regclass('jobq.job')),
    'row-level security is enabled on jobq.job');
SELECT ok(
    (SELECT relrowsecurity FROM pg_class WHERE oid = to_regclass('jobq.job_history')),
    'row-level security is enabled on jobq.job_history');

/*
 * Types
 */
SELECT has_enum('jobq', 'job_state', 'enum jobq.job_state exists');
SELECT enum_has_labels('jobq', 'job_state',
    ARRAY['pending', 'running', 'succeeded', 'failed', 'cancelled'],
    'jobq.job_state has the labels pending, running, succeeded, failed, cancelled, in that order');

SELECT has_composite('jobq', 'job_status', 'composite type jobq.job_status exists');
SELECT results_eq(
    $$SELECT attname::text COLLATE "default", format_type(atttypid, atttypmod)
        FROM pg_attribute
       WHERE attrelid = (SELECT typrelid FROM pg_type WHERE oid = to_regtype('jobq.job_status'))
         AND attnum > 0 AND NOT attisdropped
       ORDER BY attnum$$,
    $$VALUES ('id', 'bigint'),
             ('queue', 'text'),
             ('state', 'jobq.job_state'),
             ('priority', 'smallint'),
             ('attempts', 'integer'),
             ('max_attempts', 'integer'),
             ('run_at', 'timestamp with time zone'),
             ('created_at', 'timestamp with time zone'),
             ('started_at', 'timestamp with time zone'),
             ('finished_at', 'timestamp with time zone'),
             ('result', 'jsonb'),
             ('last_error', 'text'),
             ('last_sqlstate', 'text'),
             ('worker_pid', 'integer'),
             ('owner', 'regrole'),
             ('command', 'text'),
             ('task', 'text'),
             ('payload', 'jsonb'),
             ('dedup_key', 'text'),
             ('depends_on', 'bigint[]'),
             ('executor', 'text')$$,
    'jobq.job_status has the documented attributes, types and order');

/*
 * View jobq.jobs
 */
SELECT has_view('jobq', 'jobs', 'view jobq.jobs exists');
SELECT columns_are('jobq', 'jobs', ARRAY[
    'id', 'queue', 'state', 'priority', 'attempts', 'max_attempts', 'run_at',
    'created_at', 'started_at', 'finished_at', 'result', 'last_error',
    'last_sqlstate', 'worker_pid', 'owner', 'command', 'task', 'payload', 'dedup_key',
    'depends_on', 'executor'],
    'jobq.jobs has exactly the documented columns');
SELECT col_type_is('jobq', 'jobs', c, t, format('jobq.jobs.%s is %s', c, t))
  FROM (VALUES ('id', 'bigint'),
               ('queue', 'text'),
               ('state', 'jobq.job_state'),
               ('priority', 'smallint'),
               ('attempts', 'integer'),
               ('max_attempts', 'integer'),
               ('run_at', 'timestamp with time zone'),
               ('created_at', 'timestamp with time zone'),
               ('started_at', 'timestamp with time zone'),
               ('finished_at', 'timestamp with time zone'),
               ('result', 'jsonb'),
               ('last_error', 'text'),
               ('last_sqlstate', 'text'),
               ('worker_pid', 'integer'),
               ('owner', 'regrole'),
               ('command', 'text'),
               ('task', 'text'),
               ('payload', 'jsonb'),
               ('dedup_key', 'text'),
               ('depends_on', 'bigint[]'),
               ('executor', 'text')) AS v(c, t);
-- jobq.status() reads a row of jobq.jobs into a jobq.job_status
SELECT results_eq(
    $$SELECT attname::text, atttypid FROM pg_attribute
       WHERE attrelid = to_regclass('jobq.jobs') AND attnum > 0 AND NOT attisdropped
       ORDER BY attnum$$,
    $$SELECT attname::text, atttypid FROM pg_attribute
       WHERE attrelid = (SELECT typrelid FROM pg_type WHERE oid = to_regtype('jobq.job_status'))
         AND attnum > 0 AND NOT attisdropped
       ORDER BY attnum$$,
    'the columns of jobq.jobs match the attributes of jobq.job_status, in order');
SELECT ok(
    coalesce((SELECT reloptions @> ARRAY['security_invoker=true']
                FROM pg_class WHERE oid = to_regclass('jobq.jobs')), false),
    'jobq.jobs is security_invoker, so row-level security applies to its readers');

/*
 * pg_dump keeps queued and finished jobs and the id sequence
 */
SELECT ok(
    coalesce((SELECT extconfig @> ARRAY[to_regclass('jobq.job')::oid]
                FROM pg_extension WHERE extname = 'jobq'), false),
    'jobq.job is registered with pg_extension_config_dump');
SELECT ok(
    coalesce((SELECT extconfig @> ARRAY[to_regclass('jobq.job_history')::oid]
                FROM pg_extension WHERE extname = 'jobq'), false),
    'jobq.job_history is registered with pg_extension_config_dump');
SELECT ok(
    coalesce((SELECT extconfig @> ARRAY[to_regclass('jobq.job_id_seq')::oid]
                FROM pg_extension WHERE extname = 'jobq'), false),
    'jobq.job_id_seq is registered with pg_extension_config_dump');
SELECT ok(
    coalesce((SELECT extconfig @> ARRAY[to_regclass('jobq.task')::oid]
                FROM pg_extension WHERE extname = 'jobq'), false),
    'jobq.task is registered with pg_extension_config_dump');
SELECT is(
    (SELECT array_agg(c ORDER BY c)
       FROM pg_extension e, unnest(e.extcondition) AS c
      WHERE e.extname = 'jobq'),
    ARRAY['', '', '', '', '', $$WHERE task OPERATOR(pg_catalog.!~) '^jobq\.'$$]::text[],
    'pg_dump dumps every job, every role limit and every task but the built-in ones');

/*
 * jobq.task: registered tasks
 */
SELECT has_table('jobq', 'task', 'table jobq.task exists');
SELECT columns_are('jobq', 'task', ARRAY['task', 'fn', 'registered_by', 'registered_at', 'executors'],
    'jobq.task has exactly the documented columns');
SELECT col_type_is('jobq', 'task', c, t, format('jobq.task.%s is %s', c, t))
  FROM (VALUES ('task', 'text'),
               ('fn', 'regprocedure'),
               ('registered_by', 'regrole'),
               ('registered_at', 'timestamp with time zone'),
               ('executors', 'regrole[]')) AS v(c, t);
SELECT col_is_pk('jobq', 'task', 'task', 'the primary key of jobq.task is task');
SELECT results_eq(
    $$SELECT task, fn::text FROM jobq.task WHERE task LIKE 'jobq.%' ORDER BY task$$,
    $$VALUES ('jobq.noop', 'jobq.noop(jsonb)'), ('jobq.sleep', 'jobq.sleep(jsonb)')$$,
    'the built-in tasks jobq.noop and jobq.sleep are registered');

/*
 * jobq.queues and jobq.queue_stats
 */
SELECT has_table('jobq', 'queues', 'table jobq.queues exists');
SELECT columns_are('jobq', 'queues', ARRAY['queue', 'concurrency', 'paused', 'created_at', 'updated_at'],
    'jobq.queues has exactly the documented columns');
SELECT col_is_pk('jobq', 'queues', 'queue', 'the primary key of jobq.queues is queue');
SELECT ok(
    coalesce((SELECT extconfig @> ARRAY[to_regclass('jobq.queues')::oid]
                FROM pg_extension WHERE extname = 'jobq'), false),
    'jobq.queues is registered with pg_extension_config_dump');
SELECT has_table('jobq', 'role_limits', 'table jobq.role_limits exists');
SELECT columns_are('jobq', 'role_limits', ARRAY['role', 'max_pending', 'max_running', 'updated_at'],
    'jobq.role_limits has exactly the documented columns');
SELECT col_is_pk('jobq', 'role_limits', 'role', 'the primary key of jobq.role_limits is role');
SELECT col_type_is('jobq', 'role_limits', 'role', 'regrole', 'jobq.role_limits.role is regrole');
SELECT ok(
    coalesce((SELECT extconfig @> ARRAY[to_regclass('jobq.role_limits')::oid]
                FROM pg_extension WHERE extname = 'jobq'), false),
    'jobq.role_limits is registered with pg_extension_config_dump');
SELECT has_view('jobq', 'queue_stats', 'view jobq.queue_stats exists');
SELECT columns_are('jobq', 'queue_stats', ARRAY[
    'queue', 'pending', 'scheduled', 'running', 'succeeded_1m', 'failed_1m',
    'succeeded_1h', 'failed_1h', 'oldest_due_age', 'concurrency', 'paused'],
    'jobq.queue_stats has exactly the documented columns, queue first');
SELECT ok(
    coalesce((SELECT reloptions @> ARRAY['security_invoker=true']
                FROM pg_class WHERE oid = to_regclass('jobq.queue_stats')), false),
    'jobq.queue_stats is security_invoker: a role counts the jobs it may see');

/*
 * View jobq.workers
 */
SELECT has_view('jobq', 'workers', 'view jobq.workers exists');
SELECT columns_are('jobq', 'workers', ARRAY[
    'worker', 'pid', 'state', 'job_id', 'queue', 'job_started_at',
    'jobs_succeeded', 'jobs_retried', 'jobs_failed', 'started_at'],
    'jobq.workers has exactly the documented columns');
SELECT col_type_is('jobq', 'workers', c, t, format('jobq.workers.%s is %s', c, t))
  FROM (VALUES ('worker', 'integer'),
               ('pid', 'integer'),
               ('state', 'text'),
               ('job_id', 'bigint'),
               ('queue', 'text'),
               ('job_started_at', 'timestamp with time zone'),
               ('jobs_succeeded', 'bigint'),
               ('jobs_retried', 'bigint'),
               ('jobs_failed', 'bigint'),
               ('started_at', 'timestamp with time zone')) AS v(c, t);

/*
 * View jobq.executors
 */
SELECT has_view('jobq', 'executors', 'view jobq.executors exists');
SELECT columns_are('jobq', 'executors', ARRAY[
    'executor', 'role', 'host', 'pid', 'job_ids', 'jobs_claimed',
    'jobs_succeeded', 'jobs_failed', 'leases_expired', 'first_seen', 'last_seen'],
    'jobq.executors has exactly the documented columns');
SELECT col_type_is('jobq', 'executors', c, t, format('jobq.executors.%s is %s', c, t))
  FROM (VALUES ('executor', 'text'),
               ('role', 'regrole'),
               ('host', 'text'),
               ('pid', 'integer'),
               ('job_ids', 'bigint[]'),
               ('jobs_claimed', 'bigint'),
               ('jobs_succeeded', 'bigint'),
               ('jobs_failed', 'bigint'),
               ('leases_expired', 'bigint'),
               ('first_seen', 'timestamp with time zone'),
               ('last_seen', 'timestamp with time zone')) AS v(c, t);
SELECT ok(
    coalesce((SELECT reloptions @> ARRAY['security_invoker=true']
                FROM pg_class WHERE oid = to_regclass('jobq.executors')), false),
    'jobq.executors is security_invoker: a role sees the job ids it may see');

SELECT * FROM finish();
ROLLBACK;
