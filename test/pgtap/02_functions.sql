-- pgTAP: jobq's functions and the documentation of its objects.
--
-- Signatures (argument types, names, defaults, return types), language,
-- volatility and strictness of jobq.enqueue and jobq.status; a pinned
-- search_path on every function; a COMMENT on every user-facing object.
BEGIN;
SELECT plan(72);

SET LOCAL search_path = public;

/*
 * jobq.enqueue(command, queue, priority, run_at, max_attempts, timeout)
 */
SELECT has_function('jobq', 'enqueue',
    ARRAY['text', 'text', 'integer', 'timestamp with time zone', 'integer', 'interval', 'text', 'bigint[]'],
    'jobq.enqueue(text, text, integer, timestamptz, integer, interval, text, bigint[]) exists');
SELECT function_returns('jobq', 'enqueue',
    ARRAY['text', 'text', 'integer', 'timestamp with time zone', 'integer', 'interval', 'text', 'bigint[]'],
    'bigint',
    'jobq.enqueue() returns bigint');
SELECT is(
    pg_get_function_arguments(to_regprocedure('jobq.enqueue(text, text, integer, timestamptz, integer, interval, text, bigint[])')),
    'command text, queue text DEFAULT ''default''::text, priority integer DEFAULT 0, run_at timestamp with time zone DEFAULT now(), max_attempts integer DEFAULT NULL::integer, timeout interval DEFAULT NULL::interval, dedup_key text DEFAULT NULL::text, depends_on bigint[] DEFAULT NULL::bigint[]',
    'jobq.enqueue() has the documented argument names and defaults');
SELECT function_lang_is('jobq', 'enqueue',
    ARRAY['text', 'text', 'integer', 'timestamp with time zone', 'integer', 'interval', 'text', 'bigint[]'],
    'c', 'jobq.enqueue() is written in C');
SELECT volatility_is('jobq', 'enqueue',
    ARRAY['text', 'text', 'integer', 'timestamp with time zone', 'integer', 'interval', 'text', 'bigint[]'],
    'volatile', 'jobq.enqueue() is volatile');
SELECT isnt_strict('jobq', 'enqueue',
    ARRAY['text', 'text', 'integer', 'timestamp with time zone', 'integer', 'interval', 'text', 'bigint[]'],
    'jobq.enqueue() is not strict (it reports null arguments itself)');
SELECT isnt_definer('jobq', 'enqueue',
    ARRAY['text', 'text', 'integer', 'timestamp with time zone', 'integer', 'interval', 'text', 'bigint[]'],
    'jobq.enqueue() is not SECURITY DEFINER (the job owner is the caller)');
SELECT is(
    (SELECT count(*)::int FROM pg_proc
      WHERE pronamespace = to_regnamespace('jobq') AND proname = 'enqueue'),
    1,
    'jobq.enqueue is not overloaded');

/*
 * jobq.enqueue_task(task, payload, queue, priority, run_at, max_attempts,
 * timeout), jobq.register_task(task, fn), jobq.unregister_task(task)
 */
SELECT function_returns('jobq', 'enqueue_task',
    ARRAY['text', 'jsonb', 'text', 'integer', 'timestamp with time zone', 'integer', 'interval', 'text', 'bigint[]'],
    'bigint', 'jobq.enqueue_task() returns bigint');
SELECT is(
    pg_get_function_arguments(to_regprocedure('jobq.enqueue_task(text, jsonb, text, integer, timestamptz, integer, interval, text, bigint[])')),
    'task text, payload jsonb DEFAULT ''{}''::jsonb, queue text DEFAULT ''default''::text, priority integer DEFAULT 0, run_at timestamp with time zone DEFAULT now(), max_attempts integer DEFAULT NULL::integer, timeout interval DEFAULT NULL::interval, dedup_key text DEFAULT NULL::text, depends_on bigint[] DEFAULT NULL::bigint[]',
    'jobq.enqueue_task() takes the task, its payload and the options of jobq.enqueue(), with the same defaults');
SELECT isnt_definer('jobq', 'enqueue_task',
    ARRAY['text', 'jsonb', 'text', 'integer', 'timestamp with time zone', 'integer', 'interval', 'text', 'bigint[]'],
    'jobq.enqueue_task() is not SECURITY DEFINER (the job owner is the caller)');
SELECT function_returns('jobq', 'register_task', ARRAY['text', 'regprocedure'], 'void',
    'jobq.register_task(text, regprocedure) returns void');
SELECT is(
    pg_get_function_arguments(to_regprocedure('jobq.register_task(text, regprocedure)')),
    'task text, fn regprocedure',
    'jobq.register_task() takes task and fn');
SELECT function_returns('jobq', 'unregister_task', ARRAY['text'], 'boolean',
    'jobq.unregister_task(text) returns boolean');
SELECT function_returns('jobq', 'noop', ARRAY['jsonb'], 'jsonb',
    'built-in task function jobq.noop(jsonb) returns jsonb');
SELECT function_returns('jobq', 'sleep', ARRAY['jsonb'], 'jsonb',
    'built-in task function jobq.sleep(jsonb) returns jsonb');

/*
 * jobq.cancel(id), jobq.retry(id), jobq.wait(id, timeout)
 */
SELECT function_returns('jobq', 'cancel', ARRAY['bigint'], 'boolean',
    'jobq.cancel(bigint) returns boolean');
SELECT function_returns('jobq', 'retry', ARRAY['bigint'], 'boolean',
    'jobq.retry(bigint) returns boolean');
SELECT function_returns('jobq', 'wait', ARRAY['bigint', 'interval'], 'jobq.job_status',
    'jobq.wait(bigint, interval) returns jobq.job_status');
SELECT is(
    pg_get_function_arguments(to_regprocedure('jobq.wait(bigint, interval)')),
    'id bigint, timeout interval DEFAULT NULL::interval',
    'jobq.wait() takes id and an optional timeout');
SELECT isnt_definer('jobq', f, ARRAY['bigint'], format('jobq.%s() is not SECURITY DEFINER', f))
  FROM unnest(ARRAY['cancel', 'retry']) AS f;

/*
 * jobq.status(id)
 */
SELECT has_function('jobq', 'status', ARRAY['bigint'],
    'jobq.status(bigint) exists');
SELECT function_returns('jobq', 'status', ARRAY['bigint'], 'jobq.job_status',
    'jobq.status() returns jobq.job_status');
SELECT is(
    pg_get_function_arguments(to_regprocedure('jobq.status(bigint)')),
    'id bigint',
    'jobq.status() takes one argument, id');
SELECT function_lang_is('jobq', 'status', ARRAY['bigint'], 'plpgsql',
    'jobq.status() is written in PL/pgSQL');
SELECT volatility_is('jobq', 'status', ARRAY['bigint'], 'stable',
    'jobq.status() is stable');
SELECT is_strict('jobq', 'status', ARRAY['bigint'],
    'jobq.status() is strict');
SELECT isnt_definer('jobq', 'status', ARRAY['bigint'],
    'jobq.status() is not SECURITY DEFINER (it must not bypass row-level security)');
SELECT is(
    (SELECT count(*)::int FROM pg_proc
      WHERE pronamespace = to_regnamespace('jobq') AND proname = 'status'),
    1,
    'jobq.status is not overloaded');

/*
 * jobq.running_jobs(): the jobs the workers run now, from shared memory
 */
-- external executors
SELECT has_function('jobq', 'claim',
    ARRAY['text[]', 'text[]', 'integer', 'interval', 'text', 'interval', 'text', 'integer'],
    'jobq.claim(tasks, queues, n, lease, executor, wait, executor_host, executor_pid) exists');
SELECT function_returns('jobq', 'claim',
    ARRAY['text[]', 'text[]', 'integer', 'interval', 'text', 'interval', 'text', 'integer'],
    'setof record', 'jobq.claim() returns a set of jobs');
SELECT has_function('jobq', 'heartbeat', ARRAY['bigint', 'uuid', 'interval'],
    'jobq.heartbeat(id, token, extend) exists');
SELECT function_returns('jobq', 'heartbeat', ARRAY['bigint', 'uuid', 'interval'], 'boolean',
    'jobq.heartbeat() returns whether the job was cancelled');
SELECT has_function('jobq', 'complete', ARRAY['bigint', 'uuid', 'jsonb'],
    'jobq.complete(id, token, result) exists');
SELECT has_function('jobq', 'fail', ARRAY['bigint', 'uuid', 'text', 'interval'],
    'jobq.fail(id, token, error, retry_in) exists');
SELECT function_returns('jobq', 'fail', ARRAY['bigint', 'uuid', 'text', 'interval'], 'jobq.job_state',
    'jobq.fail() returns the state the job is left in');
SELECT has_function('jobq', 'complete', ARRAY['bigint[]', 'uuid[]', 'jsonb[]'],
    'jobq.complete(ids, tokens, results) exists, to complete many jobs at once');
SELECT has_function('jobq', 'release', ARRAY['bigint', 'uuid'],
    'jobq.release(id, token) exists');
SELECT has_function('jobq', 'allow_executor', ARRAY['text', 'regrole', 'regrole'],
    'jobq.allow_executor(task, executor, registrant) exists');
SELECT has_function('jobq', 'disallow_executor', ARRAY['text', 'regrole'],
    'jobq.disallow_executor(task, executor) exists');
SELECT function_returns('jobq', 'disallow_executor', ARRAY['text', 'regrole'], 'boolean',
    'jobq.disallow_executor() returns whether the role was allowed');
SELECT results_eq(
    $$SELECT pg_get_function_identity_arguments('jobq.claim(text[], text[], integer, interval, text, interval, text, integer)'::regprocedure)$$,
    $$VALUES ('tasks text[], queues text[], n integer, lease interval, executor text, wait interval, executor_host text, executor_pid integer')$$,
    'jobq.claim() takes its arguments by the documented names');
SELECT has_function('jobq', 'running_jobs', ARRAY[]::text[],
    'jobq.running_jobs() exists');
SELECT is(
    pg_get_function_result(to_regprocedure('jobq.running_jobs()')),
    'TABLE(id bigint, worker_pid integer, attempts integer, started_at timestamp with time zone)',
    'jobq.running_jobs() returns id, worker_pid, attempts, started_at');
SELECT function_lang_is('jobq', 'running_jobs', ARRAY[]::text[], 'c',
    'jobq.running_jobs() is written in C');
SELECT volatility_is('jobq', 'running_jobs', ARRAY[]::text[], 'volatile',
    'jobq.running_jobs() is volatile (it reads live shared state)');
SELECT isnt_definer('jobq', 'running_jobs', ARRAY[]::text[],
    'jobq.running_jobs() is not SECURITY DEFINER');
SELECT is_empty(
    $$SELECT * FROM jobq.running_jobs() r
       WHERE r.id IS NULL OR r.worker_pid IS NULL OR r.attempts < 1
          OR r.worker_pid NOT IN (SELECT pid FROM pg_stat_activity
                                   WHERE backend_type = 'jobq worker')$$,
    'every row of jobq.running_jobs() names a job, an attempt and a live jobq worker');

/*
 * Every SQL-language function pins its search_path.  C functions resolve
 * no names from the caller's search_path (their SQL is schema-qualified and
 * prepared once), and carry no SET clause: on jobq.enqueue() one cost more
 * than the insert itself.
 */
SELECT ok(
    coalesce((SELECT proconfig IS NULL AND prolang = (SELECT oid FROM pg_language WHERE lanname = 'c')
                FROM pg_proc
               WHERE oid = to_regprocedure('jobq.enqueue(text, text, integer, timestamptz, integer, interval, text, bigint[])')),
             false),
    'jobq.enqueue() is a C function without a SET clause');
SELECT ok(
    coalesce((SELECT proconfig @> ARRAY['search_path=pg_catalog, pg_temp']
                FROM pg_proc WHERE oid = to_regprocedure('jobq.status(bigint)')),
             false),
    'jobq.status() has search_path pinned to pg_catalog, pg_temp');
SELECT is_empty(
    $$SELECT p.oid::regprocedure::text
        FROM pg_proc p
       WHERE p.pronamespace = to_regnamespace('jobq')
         AND p.prolang <> (SELECT oid FROM pg_language WHERE lanname = 'c')
         AND NOT coalesce(p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'], false)$$,
    'every SQL-language function in schema jobq has search_path pinned to pg_catalog, pg_temp');
SELECT is_empty(
    $$SELECT p.oid::regprocedure::text
        FROM pg_depend d
        JOIN pg_proc p ON p.oid = d.objid
       WHERE d.classid = 'pg_proc'::regclass
         AND d.refclassid = 'pg_extension'::regclass
         AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'jobq')
         AND d.deptype = 'e'
         AND p.prolang <> (SELECT oid FROM pg_language WHERE lanname = 'c')
         AND NOT coalesce(p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'], false)$$,
    'every SQL-language function of extension jobq, wherever it lives, has search_path pinned');

/*
 * Every user-facing object has a COMMENT
 */
SELECT isnt(
    obj_description(to_regprocedure('jobq.enqueue(text, text, integer, timestamptz, integer, interval, text, bigint[])'), 'pg_proc'),
    NULL, 'jobq.enqueue() has a comment');
SELECT isnt(
    obj_description(to_regprocedure('jobq.status(bigint)'), 'pg_proc'),
    NULL, 'jobq.status() has a comment');
SELECT isnt(obj_description(to_regclass('jobq.job'), 'pg_class'),
    NULL, 'table jobq.job has a comment');
SELECT isnt(obj_description(to_regclass('jobq.job_history'), 'pg_class'),
    NULL, 'table jobq.job_history has a comment');
SELECT isnt(obj_description(to_regclass('jobq.jobs'), 'pg_class'),
    NULL, 'view jobq.jobs has a comment');
SELECT isnt(obj_description(to_regtype('jobq.job_state'), 'pg_type'),
    NULL, 'type jobq.job_state has a comment');
SELECT isnt(obj_description(to_regtype('jobq.job_status'), 'pg_type'),
    NULL, 'type jobq.job_status has a comment');
SELECT isnt(
    (SELECT obj_description(oid, 'pg_extension') FROM pg_extension WHERE extname = 'jobq'),
    NULL, 'extension jobq has a comment');
SELECT is_empty(
    $$SELECT p.oid::regprocedure::text
        FROM pg_proc p
       WHERE p.pronamespace = to_regnamespace('jobq')
         AND coalesce(obj_description(p.oid, 'pg_proc'), '') = ''$$,
    'every function in schema jobq has a comment');
SELECT is_empty(
    $$SELECT c.oid::regclass::text
        FROM pg_class c
       WHERE c.relnamespace = to_regnamespace('jobq')
         AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
         AND coalesce(obj_description(c.oid, 'pg_class'), '') = ''$$,
    'every table and view in schema jobq has a comment');
SELECT is_empty(
    $$SELECT t.oid::regtype::text
        FROM pg_type t
       WHERE t.typnamespace = to_regnamespace('jobq')
         AND (t.typtype IN ('e', 'd')
              OR (t.typtype = 'c'
                  AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c'))
         AND coalesce(obj_description(t.oid, 'pg_type'), '') = ''$$,
    'every enum, domain and composite type in schema jobq has a comment');
SELECT is_empty(
    $$SELECT a.attname::text
        FROM pg_attribute a
       WHERE a.attrelid = to_regclass('jobq.jobs')
         AND a.attnum > 0 AND NOT a.attisdropped
         AND coalesce(col_description(a.attrelid, a.attnum), '') = ''$$,
    'every column of jobq.jobs has a comment');
SELECT is(
    (SELECT count(*)::int FROM pg_attribute a
      WHERE a.attrelid = to_regclass('jobq.jobs')
        AND a.attnum > 0 AND NOT a.attisdropped
        AND coalesce(col_description(a.attrelid, a.attnum), '') <> ''),
    21,
    'all 21 columns of jobq.jobs have a comment');

/*
 * What the functions do with their arguments, seen from the caller's
 * transaction (rolled back: these jobs never run).
 */
CREATE TEMP TABLE tap_ids (who text PRIMARY KEY, id bigint);
INSERT INTO tap_ids SELECT 'defaults', jobq.enqueue('SELECT 1');
INSERT INTO tap_ids SELECT 'named',
    jobq.enqueue(command => 'SELECT 2', queue => 'tap', priority => 7,
                 max_attempts => 3, timeout => '5 seconds');

SELECT results_eq(
    $$SELECT queue, state::text, priority::int, attempts, owner::text, command,
             finished_at IS NULL
        FROM jobq.status((SELECT id FROM tap_ids WHERE who = 'defaults'))$$,
    $$VALUES ('default', 'pending', 0, 0, current_user::text COLLATE "default", 'SELECT 1', true)$$,
    'jobq.enqueue(command) queues a pending job in queue default, priority 0, owned by current_user');
SELECT is(
    (SELECT max_attempts FROM jobq.status((SELECT id FROM tap_ids WHERE who = 'defaults'))),
    current_setting('jobq.default_max_attempts')::int,
    'max_attempts NULL means jobq.default_max_attempts');
SELECT results_eq(
    $$SELECT queue, priority::int, max_attempts, command
        FROM jobq.status((SELECT id FROM tap_ids WHERE who = 'named'))$$,
    $$VALUES ('tap', 7, 3, 'SELECT 2')$$,
    'jobq.enqueue() takes its arguments by name');
SELECT is(
    (SELECT timeout FROM jobq.job WHERE id = (SELECT id FROM tap_ids WHERE who = 'named')),
    '5 seconds'::interval,
    'jobq.enqueue() stores the timeout');
SELECT cmp_ok(
    (SELECT id FROM tap_ids WHERE who = 'named'), '>',
    (SELECT id FROM tap_ids WHERE who = 'defaults'),
    'job ids increase');
SELECT throws_ok(
    'SELECT jobq.status(-1)', '42704', 'job -1 does not exist',
    'jobq.status() of an unknown id raises undefined_object');

SELECT * FROM finish();
ROLLBACK;
