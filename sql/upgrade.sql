--
-- upgrade: the installed version is the control file's, and updating to it
-- is a no-op; the extension can be dropped and created again
--
SELECT extversion = (SELECT default_version FROM pg_available_extensions
                     WHERE name = 'jobq') AS current
  FROM pg_extension WHERE extname = 'jobq';
ALTER EXTENSION jobq UPDATE;
-- every upgrade script found leads to the current version
SELECT source, target FROM pg_extension_update_paths('jobq')
 WHERE path IS NOT NULL ORDER BY 1, 2;

DROP EXTENSION jobq;
CREATE EXTENSION jobq;
SELECT jobq.enqueue('SELECT ''back'' AS again') AS job \gset
SELECT wait_job(:job);
SELECT (jobq.status(:job)).result;

--
-- from 0.1.0 (test/t/012_install_paths.pl compares every path's schema
-- with the full install script's): a job that 0.1.0 had marked running
-- (its claim was a row update then, a row lock now) is pending again with
-- its attempt kept, and runs
--
DROP EXTENSION jobq;
CREATE EXTENSION jobq VERSION '0.1.0';
SELECT extversion, to_regprocedure('jobq.running_jobs()') IS NULL AS no_running_jobs
  FROM pg_extension WHERE extname = 'jobq';
INSERT INTO jobq.job (state, attempts, max_attempts, owner, command,
                      started_at, worker_pid)
VALUES ('running', 1, 3, current_user::regrole, 'SELECT 42 AS answer',
        now(), 2147483647)
RETURNING id AS legacy \gset
ALTER EXTENSION jobq UPDATE;
SELECT extversion, to_regprocedure('jobq.running_jobs()') IS NOT NULL AS has_running_jobs
  FROM pg_extension WHERE extname = 'jobq';
SELECT wait_job(:legacy);
SELECT attempts, result, worker_pid <> 2147483647 AS new_worker
  FROM jobq.status(:legacy);

--
-- from 0.2.0, with this library: SQL jobs run before the update (the
-- workers read no task columns from tables that lack them), tasks after
--
DROP EXTENSION jobq;
CREATE EXTENSION jobq VERSION '0.2.0';
SELECT jobq.enqueue('SELECT ''on 0.2.0'' AS tables') AS old_tables \gset
SELECT wait_job(:old_tables);
SELECT (jobq.status(:old_tables)).result;
ALTER EXTENSION jobq UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'jobq';
SELECT jobq.enqueue_task('jobq.noop', '{"on": "0.3.0"}') AS new_tables \gset
SELECT wait_job(:new_tables);
SELECT result, task, command FROM jobq.status(:new_tables);
SELECT (jobq.status(:old_tables)).result AS kept;

--
-- from 0.3.0: dedup keys become per role, the limits table and the new
-- queue view come with the update; queued jobs and settings stay
--
DROP EXTENSION jobq;
CREATE EXTENSION jobq VERSION '0.3.0';
SELECT (jobq.configure_queue('q_upgraded', concurrency => 2)).concurrency;
SELECT jobq.enqueue('SELECT 1', run_at => now() + interval '1 hour',
                    dedup_key => 'kept-key') AS keyed \gset
ALTER EXTENSION jobq UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'jobq';
SELECT jobq.enqueue('SELECT 2', dedup_key => 'kept-key') = :keyed AS same_job;
SELECT queue, concurrency FROM jobq.queue_stats WHERE queue = 'q_upgraded';
SELECT max_pending, max_running FROM jobq.configure_role(current_user::regrole, 100, 2);
SELECT jobq.cancel(:keyed);

--
-- from 0.4.0: the "default" queue row that the install script wrote goes,
-- unless it was configured
--
DROP EXTENSION jobq;
CREATE EXTENSION jobq VERSION '0.4.0';
SELECT queue, concurrency, paused FROM jobq.queues;
ALTER EXTENSION jobq UPDATE;
SELECT count(*) AS queue_rows FROM jobq.queues;
DROP EXTENSION jobq;
CREATE EXTENSION jobq VERSION '0.4.0';
SELECT (jobq.pause('default')).paused;
ALTER EXTENSION jobq UPDATE;
SELECT queue, concurrency, paused FROM jobq.queues;
DROP EXTENSION jobq;
CREATE EXTENSION jobq;
SELECT count(*) AS queue_rows FROM jobq.queues;
