-- pgTAP: privileges.  Users read jobq's tables (through row-level
-- security) but never write them: only jobq.enqueue() and the workers do.
-- Using jobq at all takes USAGE on schema jobq, granted by an
-- administrator.
--
-- The roles are created inside the transaction and rolled back with it,
-- and so are the jobs enqueued here: they never run.
BEGIN;
SELECT plan(78);

SET LOCAL search_path = public;

CREATE ROLE jobq_tap_user LOGIN;
CREATE ROLE jobq_tap_nousage LOGIN;
GRANT USAGE ON SCHEMA jobq TO jobq_tap_user;

CREATE TEMP TABLE tap_ids (who text PRIMARY KEY, id bigint);
GRANT ALL ON tap_ids TO PUBLIC;

/*
 * What PUBLIC holds, as the catalogs say
 */
CREATE FUNCTION pg_temp.public_privs(rel regclass) RETURNS text[]
LANGUAGE sql STABLE AS $$
    SELECT coalesce(array_agg(a.privilege_type::text ORDER BY a.privilege_type), '{}')
      FROM pg_class c, aclexplode(c.relacl) a
     WHERE c.oid = rel AND a.grantee = 0
$$;

SELECT is(pg_temp.public_privs(to_regclass('jobq.job')), ARRAY['SELECT'],
    'PUBLIC holds SELECT and nothing else on jobq.job');
SELECT is(pg_temp.public_privs(to_regclass('jobq.job_history')), ARRAY['SELECT'],
    'PUBLIC holds SELECT and nothing else on jobq.job_history');
SELECT is(pg_temp.public_privs(to_regclass('jobq.jobs')), ARRAY['SELECT'],
    'PUBLIC holds SELECT and nothing else on jobq.jobs');
SELECT is(pg_temp.public_privs(to_regclass('jobq.job_id_seq')), '{}'::text[],
    'PUBLIC holds no privilege on jobq.job_id_seq');

SELECT ok(NOT has_table_privilege('public', 'jobq.job', p),
          format('PUBLIC has no %s on jobq.job', p))
  FROM unnest(ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) AS p;
SELECT ok(NOT has_table_privilege('public', 'jobq.job_history', p),
          format('PUBLIC has no %s on jobq.job_history', p))
  FROM unnest(ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) AS p;

SELECT is(pg_temp.public_privs(to_regclass('jobq.task')), ARRAY['SELECT'],
    'PUBLIC holds SELECT and nothing else on jobq.task');
SELECT is(pg_temp.public_privs(to_regclass('jobq.workers')), ARRAY['SELECT'],
    'PUBLIC holds SELECT and nothing else on jobq.workers');
SELECT ok(has_function_privilege('public', p, 'EXECUTE'),
          format('PUBLIC may execute %s', p))
  FROM unnest(ARRAY['jobq.enqueue_task(text, jsonb, text, integer, timestamptz, integer, interval, text, bigint[])',
                    'jobq.register_task(text, regprocedure)', 'jobq.unregister_task(text)',
                    'jobq.noop(jsonb)', 'jobq.sleep(jsonb)', 'jobq.worker_info()',
                    'jobq.current_job()', 'jobq.cancel(bigint)', 'jobq.retry(bigint)',
                    'jobq.wait(bigint, interval)']) AS p;

SELECT ok(NOT has_function_privilege('public', p, 'EXECUTE'),
          format('PUBLIC may not execute %s: queue settings are the administrator''s', p))
  FROM unnest(ARRAY['jobq.configure_queue(text, integer, boolean)', 'jobq.pause(text)',
                    'jobq.resume(text)']) AS p;
SELECT ok(NOT has_function_privilege('public', p, 'EXECUTE'),
          format('PUBLIC may not execute %s: executors are the administrator''s to allow', p))
  FROM unnest(ARRAY['jobq.claim(text[], text[], integer, interval, text, interval, text, integer)',
                    'jobq.heartbeat(bigint, uuid, interval)', 'jobq.complete(bigint, uuid, jsonb)',
                    'jobq.complete(bigint[], uuid[], jsonb[])',
                    'jobq.fail(bigint, uuid, text, interval)', 'jobq.release(bigint, uuid)']) AS p;
SELECT is(pg_temp.public_privs(to_regclass('jobq.executors')), ARRAY['SELECT'],
    'PUBLIC holds SELECT and nothing else on jobq.executors');
SELECT ok(has_function_privilege('public', 'jobq.executor_info()', 'EXECUTE'),
    'PUBLIC may execute jobq.executor_info(), which jobq.executors reads');
SELECT ok(NOT has_function_privilege('public', p, 'EXECUTE'),
          format('PUBLIC may not execute %s: which executor runs which task is the administrator''s', p))
  FROM unnest(ARRAY['jobq.allow_executor(text, regrole, regrole)',
                    'jobq.disallow_executor(text, regrole)']) AS p;
SELECT ok(NOT has_function_privilege('public', 'jobq.configure_role(regrole, integer, integer)', 'EXECUTE'),
    'PUBLIC may not execute jobq.configure_role(): role limits are the administrator''s');
SELECT is(pg_temp.public_privs(to_regclass('jobq.role_limits')), '{}'::text[],
    'PUBLIC holds no privilege on jobq.role_limits');
SELECT is(pg_temp.public_privs(to_regclass('jobq.queues')), ARRAY['SELECT'],
    'PUBLIC holds SELECT and nothing else on jobq.queues');

SELECT ok(NOT has_schema_privilege('public', 'jobq', 'USAGE'),
    'PUBLIC has no USAGE on schema jobq: an administrator grants it');
SELECT ok(NOT has_schema_privilege('public', 'jobq', 'CREATE'),
    'PUBLIC has no CREATE on schema jobq');
SELECT ok(has_function_privilege('public',
        'jobq.enqueue(text, text, integer, timestamptz, integer, interval, text, bigint[])', 'EXECUTE'),
    'PUBLIC may execute jobq.enqueue()');
SELECT ok(has_function_privilege('public', 'jobq.status(bigint)', 'EXECUTE'),
    'PUBLIC may execute jobq.status()');
SELECT ok(has_function_privilege('public', 'jobq.running_jobs()', 'EXECUTE'),
    'PUBLIC may execute jobq.running_jobs(), which jobq.jobs (security_invoker) reads');

/*
 * A role granted USAGE on schema jobq: reads, enqueues, never writes
 */
SET ROLE jobq_tap_user;

SELECT throws_ok(
    $$INSERT INTO jobq.job (max_attempts, owner, command)
      VALUES (1, current_user::regrole, 'SELECT 1')$$,
    '42501', 'permission denied for table job', 'a user cannot INSERT INTO jobq.job');
SELECT throws_ok(
    $$INSERT INTO jobq.job (max_attempts, owner, command)
      VALUES (1, 'postgres'::regrole, 'SELECT 1')$$,
    '42501', 'permission denied for table job',
    'a user cannot INSERT INTO jobq.job a job owned by someone else');
SELECT throws_ok('UPDATE jobq.job SET priority = 1000',
    '42501', NULL, 'a user cannot UPDATE jobq.job');
SELECT throws_ok('DELETE FROM jobq.job',
    '42501', NULL, 'a user cannot DELETE FROM jobq.job');
SELECT throws_ok('TRUNCATE jobq.job',
    '42501', NULL, 'a user cannot TRUNCATE jobq.job');
SELECT throws_ok(
    $$INSERT INTO jobq.job_history (id, queue, state, priority, run_at, attempts,
                                    max_attempts, owner, command, created_at, finished_at)
      VALUES (1, 'default', 'succeeded', 0, now(), 1, 1, current_user::regrole,
              'SELECT 1', now(), now())$$,
    '42501', 'permission denied for table job_history',
    'a user cannot INSERT INTO jobq.job_history');
SELECT throws_ok('UPDATE jobq.job_history SET result = NULL',
    '42501', NULL, 'a user cannot UPDATE jobq.job_history');
SELECT throws_ok('DELETE FROM jobq.job_history',
    '42501', NULL, 'a user cannot DELETE FROM jobq.job_history');
SELECT throws_ok('TRUNCATE jobq.job_history',
    '42501', NULL, 'a user cannot TRUNCATE jobq.job_history');
SELECT throws_ok($$SELECT nextval('jobq.job_id_seq')$$,
    '42501', 'permission denied for sequence job_id_seq',
    'a user cannot draw ids from jobq.job_id_seq');
SELECT throws_ok($$SELECT setval('jobq.job_id_seq', 1)$$,
    '42501', 'permission denied for sequence job_id_seq',
    'a user cannot reset jobq.job_id_seq');

-- tasks: only jobq.register_task() and jobq.unregister_task() write them
SELECT throws_ok(
    $$INSERT INTO jobq.task (task, fn, registered_by)
      VALUES ('sneaky', 'jobq.noop(jsonb)', current_user::regrole)$$,
    '42501', 'permission denied for table task', 'a user cannot INSERT INTO jobq.task');
SELECT throws_ok($$UPDATE jobq.task SET fn = 'jobq.sleep(jsonb)'$$,
    '42501', NULL, 'a user cannot UPDATE jobq.task');
SELECT throws_ok('DELETE FROM jobq.task',
    '42501', NULL, 'a user cannot DELETE FROM jobq.task');
SELECT lives_ok($$SELECT jobq.register_task('tap_task', 'jobq.noop(jsonb)')$$,
    'a user with USAGE on schema jobq can register a task');
SELECT is(current_user::text, 'jobq_tap_user',
    'jobq.register_task() gives the caller its identity back');
SELECT results_eq($$SELECT fn::text, registered_by::text FROM jobq.task WHERE task = 'tap_task'$$,
    $$VALUES ('jobq.noop(jsonb)', 'jobq_tap_user')$$,
    'the task is registered by the user');

SELECT lives_ok(
    $$INSERT INTO tap_ids SELECT 'user', jobq.enqueue('SELECT 1')$$,
    'a user with USAGE on schema jobq can call jobq.enqueue()');
SELECT is(current_user::text, 'jobq_tap_user',
    'jobq.enqueue() gives the caller its identity back');
SELECT isnt((SELECT id FROM tap_ids WHERE who = 'user'), NULL,
    'jobq.enqueue() returns the new job''s id');
SELECT results_eq(
    $$SELECT id, owner::text, state::text, command FROM jobq.jobs$$,
    $$SELECT id, 'jobq_tap_user', 'pending', 'SELECT 1' FROM tap_ids WHERE who = 'user'$$,
    'the user sees the job it enqueued, owned by itself, in jobq.jobs');
SELECT results_eq(
    $$SELECT id, owner::text FROM jobq.job$$,
    $$SELECT id, 'jobq_tap_user' FROM tap_ids WHERE who = 'user'$$,
    'the user reads its job in jobq.job');
SELECT is(
    (jobq.status((SELECT id FROM tap_ids WHERE who = 'user'))).owner::text,
    'jobq_tap_user',
    'jobq.status() shows the user''s job as its own');

-- the job cannot be altered after the fact, not even by its owner
SELECT throws_ok(
    format('UPDATE jobq.job SET command = %L WHERE id = %s',
           'SELECT 2', (SELECT id FROM tap_ids WHERE who = 'user')),
    '42501', NULL, 'the owner cannot rewrite its queued job');
SELECT throws_ok(
    format('DELETE FROM jobq.job WHERE id = %s', (SELECT id FROM tap_ids WHERE who = 'user')),
    '42501', NULL, 'the owner cannot delete its queued job');

-- an error in enqueue leaves the caller's identity alone
SELECT throws_ok($$SELECT jobq.enqueue('SELECT 1', priority => 5000)$$,
    '22003', NULL, 'jobq.enqueue() rejects an out-of-range priority');
SELECT is(current_user::text, 'jobq_tap_user',
    'after a failed jobq.enqueue() the caller is still itself');

RESET ROLE;

SELECT results_eq(
    $$SELECT owner::text, command FROM jobq.job
       WHERE id = (SELECT id FROM tap_ids WHERE who = 'user')$$,
    $$VALUES ('jobq_tap_user', 'SELECT 1')$$,
    'the job a user enqueued is stored in jobq.job, owned by that user');

/*
 * A role without USAGE on schema jobq cannot use jobq
 */
SET ROLE jobq_tap_nousage;

SELECT throws_ok($$SELECT jobq.enqueue('SELECT 1')$$,
    '42501', 'permission denied for schema jobq',
    'a role without USAGE on schema jobq cannot call jobq.enqueue()');
SELECT throws_ok($$SELECT jobq.enqueue(command => 'SELECT 1', queue => 'q')$$,
    '42501', 'permission denied for schema jobq',
    'nor by named arguments');
SELECT throws_ok('SELECT jobq.status(1)',
    '42501', 'permission denied for schema jobq',
    'a role without USAGE on schema jobq cannot call jobq.status()');
SELECT throws_ok('SELECT count(*) FROM jobq.jobs',
    '42501', 'permission denied for schema jobq',
    'a role without USAGE on schema jobq cannot read jobq.jobs');

RESET ROLE;

SELECT is(
    (SELECT count(*)::int FROM jobq.job WHERE owner::oid = to_regrole('jobq_tap_nousage')::oid),
    0,
    'no job was queued for the role without USAGE');

SELECT * FROM finish();
ROLLBACK;
