--
-- tasks: functions (jsonb) -> jsonb registered under a name and queued
-- with a payload; the built-in C tasks; a C task module; bad input
--

-- the built-in tasks need no setup
SELECT task, fn, registered_by = (SELECT extowner::regrole FROM pg_extension
                                   WHERE extname = 'jobq') AS by_extension_owner
  FROM jobq.task ORDER BY task;
SELECT jobq.enqueue_task('jobq.noop', '{"hello": ["world", 1]}') AS noop,
       jobq.enqueue_task('jobq.noop') AS noop_default,
       jobq.enqueue_task('jobq.sleep', '{"seconds": 0.05}') AS sleep \gset
SELECT wait_job(:noop), wait_job(:noop_default), wait_job(:sleep);
SELECT id = :noop AS noop, state, attempts, task, payload, command, result
  FROM jobq.jobs WHERE id IN (:noop, :noop_default, :sleep) ORDER BY id;

-- outside a job there is no current job
SELECT jobq.current_job() IS NULL AS no_current_job;

-- a C task module: the task's SPI work commits with the job
CREATE EXTENSION jobq_test;
CREATE TABLE task_rows (v text);
SELECT jobq.register_task('c_insert', 'jobq_test.spi_insert(jsonb)');
SELECT jobq.enqueue_task('c_insert', '{"table": "task_rows", "value": "from C"}') AS job \gset
SELECT wait_job(:job);
SELECT state, attempts, result FROM jobq.status(:job);
SELECT * FROM task_rows;

-- a C task that fails twice and then succeeds: the failed attempts'
-- writes are rolled back, the third attempt's commit with its result
CREATE TABLE task_attempts (attempt integer);
SELECT jobq.register_task('c_flaky', 'jobq_test.fail_until(jsonb)');
SELECT jobq.enqueue_task('c_flaky', '{"table": "task_attempts", "succeed_at": 3}',
                         max_attempts => 5) AS job \gset
SELECT wait_job(:job);
SELECT state, attempts, result, last_error FROM jobq.status(:job);
SELECT * FROM task_attempts;

-- one that never succeeds fails for good, with its error and nothing written
TRUNCATE task_attempts;
SELECT jobq.enqueue_task('c_flaky', '{"table": "task_attempts", "succeed_at": 9}',
                         max_attempts => 2) AS job \gset
SELECT wait_job(:job);
SELECT state, attempts, result, last_error, last_sqlstate FROM jobq.status(:job);
SELECT count(*) AS rows_written FROM task_attempts;

-- any language works the same way: PL/pgSQL
CREATE FUNCTION add_numbers(payload jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_rows VALUES ('plpgsql ' || (payload->>'a'));
    RETURN jsonb_build_object('sum', (payload->>'a')::int + (payload->>'b')::int);
END
$$;
SELECT jobq.register_task('add', 'add_numbers(jsonb)');
SELECT jobq.enqueue_task('add', '{"a": 2, "b": 40}') AS job \gset
SELECT wait_job(:job);
SELECT state, result FROM jobq.status(:job);
SELECT * FROM task_rows ORDER BY v;

-- registering again points the task at another function
CREATE FUNCTION add_numbers_v2(payload jsonb) RETURNS jsonb
LANGUAGE sql AS $$ SELECT jsonb_build_object('v2', true) $$;
SELECT jobq.register_task('add', 'add_numbers_v2(jsonb)');
SELECT fn FROM jobq.task WHERE task = 'add';
SELECT jobq.enqueue_task('add', '{}') AS job \gset
SELECT wait_job(:job);
SELECT result FROM jobq.status(:job);

-- a job's task unregistered after it was enqueued: the job fails at run
-- time, once, with an error that says so
BEGIN;
SELECT jobq.enqueue_task('add', '{}', max_attempts => 3) AS job \gset
SELECT jobq.unregister_task('add');
COMMIT;
SELECT wait_job(:job);
SELECT state, attempts, last_error, last_sqlstate FROM jobq.status(:job);
SELECT jobq.unregister_task('add') AS again, jobq.unregister_task('never_was') AS unknown;

-- a task whose function was dropped fails the same way
CREATE FUNCTION doomed(payload jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT payload $$;
SELECT jobq.register_task('doomed', 'doomed(jsonb)');
BEGIN;
SELECT jobq.enqueue_task('doomed', '{}', max_attempts => 3) AS job \gset
DROP FUNCTION doomed(jsonb);
COMMIT;
SELECT wait_job(:job);
SELECT state, attempts, regexp_replace(last_error, '[0-9]+', 'N') AS last_error
  FROM jobq.status(:job);
SELECT jobq.unregister_task('doomed');

-- bad input: a clear error, and nothing queued or registered
SELECT count(*) AS jobs_before FROM jobq.jobs \gset
SELECT count(*) AS tasks_before FROM jobq.task \gset
SELECT jobq.enqueue_task('no_such_task', '{}');
SELECT jobq.enqueue_task(NULL, '{}');
SELECT jobq.enqueue_task('jobq.noop', NULL);
SELECT jobq.enqueue_task('jobq.noop', '{}', queue => NULL);
SELECT jobq.enqueue_task('jobq.noop', '{}', max_attempts => -1);
SELECT jobq.enqueue_task(repeat('t', 64), '{}');
SET jobq.max_payload_size = '1kB';
SELECT jobq.enqueue_task('jobq.noop', jsonb_build_object('blob', repeat('x', 2000)));
RESET jobq.max_payload_size;
SELECT jobq.register_task('', 'jobq.noop(jsonb)');
SELECT jobq.register_task(NULL, 'jobq.noop(jsonb)');
SELECT jobq.register_task('jobq.mine', 'jobq.noop(jsonb)');
SELECT jobq.unregister_task('jobq.noop');
CREATE FUNCTION two_args(a jsonb, b jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT a';
CREATE FUNCTION returns_text(a jsonb) RETURNS text LANGUAGE sql AS 'SELECT a::text';
CREATE FUNCTION takes_json(a json) RETURNS jsonb LANGUAGE sql AS 'SELECT a::jsonb';
CREATE FUNCTION returns_set(a jsonb) RETURNS SETOF jsonb LANGUAGE sql AS 'SELECT a';
CREATE PROCEDURE a_procedure(a jsonb) LANGUAGE sql AS 'SELECT 1';
SELECT jobq.register_task('t', 'two_args(jsonb, jsonb)');
SELECT jobq.register_task('t', 'returns_text(jsonb)');
SELECT jobq.register_task('t', 'takes_json(json)');
SELECT jobq.register_task('t', 'returns_set(jsonb)');
SELECT jobq.register_task('t', 'a_procedure(jsonb)');
SELECT jobq.register_task('t', 'no_such_function(jsonb)');
-- a registration rolled back leaves nothing behind
BEGIN;
SELECT jobq.register_task('rolled_back', 'jobq.noop(jsonb)');
ROLLBACK;
SELECT jobq.enqueue_task('rolled_back', '{}');
SELECT count(*) - :jobs_before AS new_jobs FROM jobq.jobs;
SELECT count(*) - :tasks_before AS new_tasks FROM jobq.task;

-- privileges: registering needs EXECUTE on the function, and so does
-- enqueueing; a task belongs to the role that registered it
CREATE ROLE regress_jobq_tasker LOGIN;
CREATE ROLE regress_jobq_other LOGIN;
GRANT USAGE ON SCHEMA jobq TO regress_jobq_tasker, regress_jobq_other;
GRANT USAGE ON SCHEMA jobq_test TO regress_jobq_tasker, regress_jobq_other;
GRANT INSERT ON task_rows TO regress_jobq_tasker, regress_jobq_other;
CREATE FUNCTION private_task(payload jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT payload';
REVOKE EXECUTE ON FUNCTION private_task(jsonb) FROM PUBLIC;
SET ROLE regress_jobq_tasker;
SELECT jobq.register_task('private', 'private_task(jsonb)');
SELECT jobq.register_task('tasker_insert', 'jobq_test.spi_insert(jsonb)');
SELECT jobq.unregister_task('c_insert');
RESET ROLE;
SELECT jobq.register_task('private', 'private_task(jsonb)');
SET ROLE regress_jobq_other;
SELECT jobq.enqueue_task('private', '{}');
SELECT jobq.register_task('tasker_insert', 'jobq.noop(jsonb)');
SELECT jobq.unregister_task('tasker_insert');
-- a role's jobs call only tasks registered by a superuser, by itself, or
-- by a role it is a member of: the registrant picks the code they run
SELECT jobq.enqueue_task('tasker_insert', '{"table": "task_rows", "value": "untrusted"}');
RESET ROLE;
GRANT regress_jobq_tasker TO regress_jobq_other;
SET ROLE regress_jobq_other;
-- a task's job runs as the role that enqueued it
SELECT jobq.enqueue_task('tasker_insert', '{"table": "task_rows", "value": "as other"}') AS job \gset
RESET ROLE;
SELECT wait_job(:job);
SELECT state, owner FROM jobq.status(:job);
SELECT count(*) FROM task_rows WHERE v = 'as other';
-- a role that loses EXECUTE between enqueue and run: the job fails, once
GRANT EXECUTE ON FUNCTION private_task(jsonb) TO regress_jobq_other;
BEGIN;
SET LOCAL ROLE regress_jobq_other;
SELECT jobq.enqueue_task('private', '{}', max_attempts => 3) AS job \gset
RESET ROLE;
REVOKE EXECUTE ON FUNCTION private_task(jsonb) FROM regress_jobq_other;
COMMIT;
SELECT wait_job(:job);
SELECT state, attempts, last_error, last_sqlstate FROM jobq.status(:job);
-- the superuser may take over any task
SELECT jobq.unregister_task('tasker_insert');

-- jobq.workers: one row per slot; a busy worker shows its job (which the
-- test then cancels)
SELECT jobq.enqueue_task('jobq.sleep', '{"seconds": 60}',
                         max_attempts => 1, queue => 'sleepy') AS job \gset
-- (a worker whose session a C task of another role made its own may be
-- starting again in a fresh process: wait for both)
SELECT wait_started(:job) AS running, wait_workers(2) AS workers;
SELECT state, job_id = :job AS this_job, queue, job_started_at IS NOT NULL AS started
  FROM jobq.workers WHERE state = 'busy';
SELECT count(*) AS slots, count(pid) AS running, sum(jobs_succeeded) > 0 AS some_succeeded,
       sum(jobs_retried) > 0 AS some_retried, sum(jobs_failed) > 0 AS some_failed
  FROM jobq.workers;
SELECT jobq.cancel(:job);
-- the sleep is interrupted by the job's timeout
SELECT jobq.enqueue_task('jobq.sleep', '{"seconds": 60}', timeout => '1s',
                         max_attempts => 1) AS job \gset
SELECT wait_job(:job);
SELECT state, last_error, last_sqlstate FROM jobq.status(:job);
-- another role sees that a worker is busy, not with what
SELECT jobq.enqueue_task('jobq.sleep', '{"seconds": 60}', max_attempts => 1) AS job \gset
SELECT wait_started(:job) AS running;
SET ROLE regress_jobq_other;
SELECT state, job_id, queue FROM jobq.workers WHERE state = 'busy';
RESET ROLE;
SELECT jobq.cancel(:job);
SELECT wait_job(:job);

-- payloads that are not what jobq.sleep needs
SELECT jobq.enqueue_task('jobq.sleep', '[1]', max_attempts => 1) AS a,
       jobq.enqueue_task('jobq.sleep', '{"secs": 1}', max_attempts => 1) AS b,
       jobq.enqueue_task('jobq.sleep', '{"seconds": -1}', max_attempts => 1) AS c \gset
SELECT wait_job(:a), wait_job(:b), wait_job(:c);
SELECT state, last_error, last_sqlstate FROM jobq.jobs WHERE id IN (:a, :b, :c) ORDER BY id;

DROP OWNED BY regress_jobq_tasker, regress_jobq_other;
DROP ROLE regress_jobq_tasker, regress_jobq_other;
DROP EXTENSION jobq_test;
